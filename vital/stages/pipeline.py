"""The whole BioMed-VITAL pipeline: run each stage's recipe in order, through one hub, and print every artifact.

Usage:

    vital pipeline --config quickstart                                  # offline, tiny, from any folder
    vital pipeline --config recipes/quickstart/pipeline.yaml            # the same profile, by path
    python recipes/pipeline.py --config recipes/quickstart/pipeline.yaml --stages ingest

The pipeline YAML names the hub and, for each stage, the recipe and its own YAML config (a relative path is read from
the pipeline YAML's folder). `--config` also takes the name of a shipped profile (`quickstart`, `biomed_vital`,
`biomed_vital_plus`; `vital.resources`). Stages talk to each other only through the hub, so any stage can also be
run alone with `vital <stage> --config <its yaml>`.

With a ``stand_in:`` key (``true``, or a mapping of ``vital stand-in`` options such as ``latency_ms``, ``faults``,
``seed``, ``batch_delay_s``), the pipeline starts the bundled stand-in endpoint as a subprocess for the run (stopped
at the end, also on error) and points every API stage (a module with ``API_STAGE = True``) at it:
``--provider openai-compatible --base_url <its URL> --model vital-stand-in``. Without it, API stages talk to the
endpoints their YAMLs name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vital.arguments import HubLocation
from vital.hub import PushResult
from vital.resources import pipeline_config
from vital.runner import load_recipe, recipe_parser, setup_logging


logger = logging.getLogger("vital.pipeline")


@dataclass
class PipelineArguments(HubLocation):
    """
    Arguments of the pipeline: which stages run, in which order, through which hub.

    Parameters:
        hub (`str`, *optional*, defaults to `"local:outputs/hub"`):
            The hub every stage reads and writes (`"local:<dir>"` or `"hf"`); it overrides the `hub` of the stage
            configs.
        stages (`list[str]`, *optional*, defaults to `[]`):
            Stages to run, in order, each as `"name"` (the stage's defaults) or `"name=path/to/config.yaml"`. A
            relative path in the pipeline YAML is read from that YAML's folder; one given on the command line, from
            the current folder.
        only (`list[str]`, *optional*, defaults to `[]`):
            Run only these stages (by name); each must be one of `stages`.
        dry_run (`bool`, *optional*, defaults to `False`):
            Count the requests and estimate tokens and cost of every API stage, and print the profile's settings;
            run nothing and send nothing.
        report_dir (`str`, *optional*, defaults to `"outputs/pipeline"`):
            Where the artifact table and the lineage picture are written.
        stand_in (`dict`, `str` or `None`, *optional*):
            Serve the offline stand-in endpoint (`vital stand-in`) for the run and point every API stage at it:
            `true`, or a mapping of its options (`latency_ms`, `faults`, `seed`, `batch_delay_s`; JSON on the command
            line). Unset: API stages talk to the endpoints their configs name.
    """

    hub: str | None = field(default="local:outputs/hub", metadata={"help": "The hub every stage reads and writes."})
    stages: list[str] = field(
        default_factory=list,
        metadata={"help": "Stages to run, in order, each as 'name' or 'name=path/to/config.yaml'."},
    )
    only: list[str] = field(default_factory=list, metadata={"help": "Run only these stages (by name)."})
    dry_run: bool = field(
        default=False,
        metadata={"help": "Count the requests and estimate tokens and cost of every API stage; run and send nothing."},
    )
    report_dir: str = field(
        default="outputs/pipeline", metadata={"help": "Where the artifact table and the lineage picture are written."}
    )
    stand_in: dict | str | None = field(
        default=None,
        metadata={
            "help": "Serve the offline stand-in endpoint for the run and point every API stage at it: true, or a "
            "mapping (JSON on the command line) of its options: latency_ms, faults, seed, batch_delay_s."
        },
    )


def parse_stage(entry: str, base: str | Path | None = None) -> tuple[str, str | None]:
    """``"name=config"`` as ``(name, config)``; a relative ``config`` is joined to ``base`` (the pipeline YAML's
    folder) when one is given."""
    name, _, config = entry.partition("=")
    config = config.strip() or None
    if config and base is not None and not Path(config).is_absolute():
        config = str(Path(base) / config)
    return name.strip(), config


def resolve_config(argv: list[str]) -> tuple[list[str], Path | None]:
    """``argv`` with ``--config``'s value made a file (a shipped profile's name becomes its ``pipeline.yaml``), and
    the folder the pipeline YAML's stage configs are read from: that YAML's, unless ``--stages`` on the command line
    replaces its stages (then None: paths are read from the current folder)."""
    argv = list(argv)
    if "--config" not in argv or argv.index("--config") + 1 >= len(argv):
        return argv, None
    index = argv.index("--config") + 1
    argv[index] = pipeline_config(argv[index])
    replaced = any(a == "--stages" or a.startswith("--stages=") for a in argv)
    return argv, None if replaced else Path(argv[index]).parent


def stage_argv(name: str, config: str | None, hub: str) -> list[str]:
    """The stage's command line: its YAML, pointed at the pipeline's hub."""
    argv = []
    if config:
        if not Path(config).is_file():
            raise FileNotFoundError(f"stage {name!r}: config {config} not found")
        argv += ["--config", config]
        own = (yaml.safe_load(Path(config).read_text()) or {}).get("hub")
        if own is not None and own != hub:
            logger.warning("stage %r: the pipeline's hub %s overrides the one in %s (%s)", name, hub, config, own)
    return [*argv, "--hub", hub]


def dry_run(stages: list[tuple[str, str | None]], hub: str) -> list:
    """The profile's settings table (every setting the paper and ours decide differently, as each stage's YAML sets
    it), then each API stage's `estimate` (requests, tokens, cost); nothing is sent to any model API."""
    from vital.llm.estimate import PROFILE_SETTINGS, estimate_table, settings_rows, settings_table

    keys = dict(PROFILE_SETTINGS)
    estimates = []
    for name, config in stages:
        recipe = load_recipe(name)
        keys[name] = getattr(recipe, "PROFILE_SETTINGS", keys.get(name, ()))
        if hasattr(recipe, "estimate"):
            estimates += recipe.estimate(stage_argv(name, config, hub))
        else:
            logger.info("stage %s makes no API requests", name)
    print("\nSettings of this profile (README: 'Paper vs ours'):")
    print(settings_table(settings_rows(stages, keys)))
    print("\nDry run: nothing was sent. Estimated API use per stage:")
    print(estimate_table(estimates))
    return estimates


def stand_in_options(value: str | dict | bool | None) -> dict | None:
    """The ``stand_in`` setting as the stand-in's options: None (no stand-in), or a mapping (``true`` is ``{}``)."""
    if isinstance(value, str):
        text = value.strip()
        value = (
            json.loads(text) if text.startswith("{") else {"true": True, "false": False, "": None}.get(text.lower())
        )
        if value is None and text.lower() not in ("false", ""):
            raise ValueError(f"stand_in must be true, false or a mapping of options, got {text!r}")
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"stand_in must be true, false or a mapping of options, got {value!r}")
    return dict(value)


@contextlib.contextmanager
def serve_stand_in(options: dict, timeout_s: float = 60.0) -> Iterator[str]:
    """Run ``vital stand-in`` (as ``python -m vital.cli stand-in``, the interpreter running this) on a free loopback
    port as a subprocess; yield its base URL; stop it on exit, also when the run fails."""
    with tempfile.TemporaryDirectory(prefix="vital-stand-in-") as tmp:
        url_file = os.path.join(tmp, "url")
        argv = [sys.executable, "-m", "vital.cli", "stand-in", "--port", "0", "--url_file", url_file]
        argv += ["--exit_with_parent"]  # a SIGKILLed pipeline leaves no server behind
        argv += [item for key, value in options.items() for item in (f"--{key}", str(value))]  # it refuses unknowns
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + timeout_s
            while not os.path.exists(url_file):
                if process.poll() is not None:
                    raise RuntimeError(f"the stand-in endpoint exited with code {process.returncode} before serving")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the stand-in endpoint did not start within {timeout_s:.0f} s")
                time.sleep(0.05)
            url = Path(url_file).read_text(encoding="utf-8").strip()
            logger.info("stand-in endpoint for this run: %s (pid %d)", url, process.pid)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def endpoint_argv(name: str, base_url: str | None) -> list[str]:
    """The flags that point an API stage at the run's stand-in (none for other stages, or without a stand-in). The
    key variable is one nobody sets, so no real key is ever sent to the stand-in."""
    if base_url is None or not getattr(load_recipe(name), "API_STAGE", False):
        return []
    from vital.llm import STAND_IN_MODEL

    return ["--provider", "openai-compatible", "--base_url", base_url, "--model", STAND_IN_MODEL,
            "--api_key_env", "VITAL_STAND_IN_API_KEY"]  # fmt: skip


def main(args: PipelineArguments) -> list[PushResult]:
    setup_logging()
    stages = [parse_stage(s) for s in args.stages]
    unknown = set(args.only) - {name for name, _ in stages}
    if unknown:
        raise ValueError(f"--only names stages that the pipeline does not have: {sorted(unknown)}")
    stages = [(name, config) for name, config in stages if not args.only or name in args.only]
    if args.dry_run:
        return dry_run(stages, args.hub)
    pushed: list[PushResult] = []
    options = stand_in_options(args.stand_in)
    with serve_stand_in(options) if options is not None else contextlib.nullcontext() as base_url:
        for name, config in stages:
            logger.info("=== stage %s (%s)", name, config or "defaults")
            pushed += load_recipe(name).cli([*stage_argv(name, config, args.hub), *endpoint_argv(name, base_url)])
    # Every artifact as the hub now holds it, with its headline and the inputs its card names.
    from vital.hub import get_hub
    from vital.lineage import collect, table, write_report

    artifacts = collect(get_hub(args.hub), pushed)
    report = write_report(artifacts, args.report_dir)
    print(f"\nArtifacts (lineage picture: {report['picture']}, details: {report['markdown']})")
    print(table(artifacts))
    return pushed


def cli(argv: list[str] | None = None) -> list[PushResult]:
    argv, base = resolve_config(sys.argv[1:] if argv is None else argv)
    (args,) = recipe_parser((PipelineArguments,)).parse_args_and_config(argv)
    if base is not None:  # the YAML's own stage paths: from its folder, wherever the command runs
        args.stages = ["=".join(filter(None, parse_stage(entry, base))) for entry in args.stages]
    return main(args)


if __name__ == "__main__":
    cli()
