"""The whole BioMed-VITAL pipeline: run each stage's recipe in order, through one hub, and print every artifact.

Usage:

    vital pipeline --config recipes/quickstart/pipeline.yaml            # offline, tiny, embedded defaults
    python recipes/pipeline.py --config recipes/quickstart/pipeline.yaml --stages ingest

The pipeline YAML names the hub and, for each stage, the recipe and its own YAML config. Stages talk to each other
only through the hub, so any stage can also be run alone with `vital <stage> --config <its yaml>`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from trl import TrlParser

from vital.hub import PushResult
from vital.runner import artifact_table, load_recipe, setup_logging


logger = logging.getLogger("vital.pipeline")


@dataclass
class PipelineArguments:
    hub: str = field(default="local:outputs/hub", metadata={"help": "The hub every stage reads and writes."})
    stages: list[str] = field(
        default_factory=list,
        metadata={"help": "Stages to run, in order, each as 'name' or 'name=path/to/config.yaml'."},
    )
    only: list[str] = field(default_factory=list, metadata={"help": "Run only these stages (by name)."})


def parse_stage(entry: str) -> tuple[str, str | None]:
    name, _, config = entry.partition("=")
    return name.strip(), (config.strip() or None)


def run_stage(name: str, config: str | None, hub: str) -> list[PushResult]:
    """Parse the stage's YAML with its own recipe parser, point it at ``hub``, and run its ``main``."""
    argv = []
    if config:
        if not Path(config).is_file():
            raise FileNotFoundError(f"stage {name!r}: config {config} not found")
        argv += ["--config", config]
        if "hub" in (yaml.safe_load(Path(config).read_text()) or {}):
            logger.warning("stage %r: the pipeline's hub %s overrides the one in %s", name, hub, config)
    return load_recipe(name).cli([*argv, "--hub", hub])


def main(args: PipelineArguments) -> list[PushResult]:
    setup_logging()
    stages = [parse_stage(s) for s in args.stages]
    unknown = set(args.only) - {name for name, _ in stages}
    if unknown:
        raise ValueError(f"--only names stages that the pipeline does not have: {sorted(unknown)}")
    pushed: list[PushResult] = []
    for name, config in stages:
        if args.only and name not in args.only:
            continue
        logger.info("=== stage %s (%s)", name, config or "defaults")
        pushed += run_stage(name, config, args.hub)
    print("\nArtifacts")
    print(artifact_table(pushed))
    return pushed


def cli(argv: list[str] | None = None) -> list[PushResult]:
    (args,) = TrlParser((PipelineArguments,)).parse_args_and_config(argv)
    return main(args)


if __name__ == "__main__":
    cli()
