"""What every recipe shares: finding a recipe script by name, its processes, logging, and the table of pushed
artifacts."""

from __future__ import annotations

import functools
import importlib
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from vital.hub import PushResult


# Argument and config names that hold a credential (never given to a recipe: keys come from the environment).
_SECRET_NAMES = re.compile(
    r"^(?:.*_)?(?:api_?key|apikey|secret|secret_key|password|passwd)$|^(?:hub|hf|api|auth|access|bearer)?_?token$"
)
# Values shaped like a credential: OpenAI keys (sk-..., sk-proj-...), Hugging Face tokens (hf_...), bearer headers.
_SECRET_VALUES = re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}|\bhf_[A-Za-z0-9]{30,}|\bBearer\s+\S{16,}")


def _secret_name(name: str) -> bool:
    name = name.lstrip("-").split("=", 1)[0].replace("-", "_").lower()
    return bool(_SECRET_NAMES.match(name)) and not name.endswith("_env")


def _config_secrets(value: Any, where: str) -> Iterator[str]:
    """Where (dotted keys) a loaded YAML config holds a secret-named key or a secret-shaped value."""
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if _secret_name(str(key)) and item not in (None, ""):
                yield path
            else:
                yield from _config_secrets(item, path)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _config_secrets(item, f"{where}[{index}]")
    elif isinstance(value, str) and _SECRET_VALUES.search(value):
        yield where


def _secret_refusal(what: str) -> str:
    return (
        f"{what} looks like a credential (an API key or token); it is refused and not repeated here. Keys are never "
        "given on the command line or in a config (both end up in logs, shell history and cards): put the key in an "
        "environment variable and name the variable with --api_key_env (default OPENAI_API_KEY); Hugging Face "
        "tokens go in HF_TOKEN or `hf auth login`."
    )


_COMMAND: list[str] = []  # the `vital <stage>` command running, for the parsers' usage line


def recipe_parser(dataclass_types: Any, **kwargs: Any) -> Any:
    """The recipes' argument parser: TRL's ``TrlParser`` (dataclasses, ``--config`` YAML, command-line overrides)
    with three differences. No prefix matching (``--api_key`` is not taken as ``--api_key_env``); a credential on the
    command line or in the config, by name or by shape, is refused without repeating it; and unknown arguments are
    named without their values::

        args, endpoint = recipe_parser((ScriptArguments, EndpointConfig)).parse_args_and_config(argv)
    """
    return _recipe_parser_class()(dataclass_types, **kwargs)


@functools.cache
def _recipe_parser_class() -> type:
    from trl import TrlParser

    class _RecipeParser(TrlParser):
        __doc__ = recipe_parser.__doc__

        def __init__(self, dataclass_types: Any = None, **kwargs: Any) -> None:
            kwargs.setdefault("allow_abbrev", False)
            if _COMMAND:  # `vital generate --help` says "usage: vital generate", not "usage: vital"
                kwargs.setdefault("prog", _COMMAND[-1])
            kwargs.setdefault(
                "epilog",
                "--config YAML reads these arguments from a YAML file (keys are the names above without --), or from "
                "a config shipped with the package (e.g. quickstart/generate.yaml); flags given on the command line "
                "override it.",
            )
            super().__init__(dataclass_types, **kwargs)

        def screen(self, args: Sequence[str]) -> None:
            """Refuse credentials in ``args`` or in the ``--config`` file they name (see the class docstring)."""
            import yaml

            for position, arg in enumerate(args):
                if arg.startswith("-") and _secret_name(arg):
                    self.error(_secret_refusal(f"argument {position + 1} ({arg.split('=', 1)[0]})"))
                if _SECRET_VALUES.search(arg):
                    flag = next((a for a in reversed(args[:position]) if a.startswith("--")), None)
                    named = f" (after {flag.split('=', 1)[0]})" if flag else ""
                    self.error(_secret_refusal(f"the value of argument {position + 1}{named}"))
            if "--config" in args:
                index = args.index("--config")
                if index + 1 < len(args):
                    with open(args[index + 1], encoding="utf-8") as handle:
                        config = yaml.safe_load(handle)
                    found = list(_config_secrets(config, ""))
                    if found:
                        self.error(_secret_refusal(f"config {args[index + 1]}: key {', '.join(found)}"))

        def error(self, message: str) -> None:
            """One line on standard error and exit status 2 (no usage dump of every option: see --help)."""
            self.exit(2, f"{self.prog}: error: {message}\n")

        def parse_args_and_config(self, args: Iterable[str] | None = None, **_: Any) -> tuple:
            """Parse ``args`` (default ``sys.argv[1:]``) and their ``--config`` into the dataclasses; unknown
            arguments are an error that names them (never their values), with the option meant where it is clear.
            ``--config`` takes a file, or a config shipped with the package (``quickstart/generate.yaml`` or
            ``recipes/quickstart/generate.yaml``, from any folder)."""
            from vital.resources import config_file

            args = list(sys.argv[1:] if args is None else args)
            if "--config" in args and args.index("--config") + 1 < len(args):
                index = args.index("--config") + 1
                try:
                    args[index] = config_file(args[index])
                except FileNotFoundError as error:
                    self.error(str(error))
            self.screen(args)
            *parsed, from_config, from_args = super().parse_args_and_config(
                args, return_remaining_strings=True, separate_remaining_strings=True
            )
            unknown = [a.split("=", 1)[0] for a in from_args if a.startswith("-")]
            in_config = [a for a in from_config if a.startswith("--")]
            if from_args and not unknown:
                unknown = [f"{len(from_args)} positional value(s)"]
            if unknown or in_config:
                where = [f"{', '.join(self._meant(a) for a in unknown)} (values not shown)"] if unknown else []
                if in_config:
                    config = args[args.index("--config") + 1]
                    keys = ", ".join(self._meant(a, prefix="") for a in in_config)
                    where.append(f"in config {config}: key(s) {keys}")
                self.error(f"unknown arguments: {'; '.join(where)}; see --help")
            return tuple(parsed)

        def _meant(self, option: str, prefix: str = "--") -> str:
            """``option`` with the option it was probably meant as: a renamed one, or a close spelling."""
            import difflib

            name = option.lstrip("-")
            known = {o.lstrip("-") for action in self._actions for o in action.option_strings}
            guess = RENAMED_OPTIONS.get(name) if RENAMED_OPTIONS.get(name) in known else None
            if guess is None:
                close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
                guess = close[0] if close else None
            shown = f"{prefix}{name}"
            return f"{shown} (did you mean {prefix}{guess}?)" if guess else shown

    return _RecipeParser


RENAMED_OPTIONS = {
    "revision": "hub_revision",
    "private": "hub_private_repo",
    "push": "push_to_hub",
    "output_repo": "hub_model_id",
    "run_branch": "hub_revision",
    "dataset": "dataset_name",
}
"""Options renamed to TRL's / `TrainingArguments`' names; an unknown argument under an old name says the new one."""


# Stages whose script has another name: a `recipes/select.py` would shadow the standard library's `select` module
# for `python recipes/<stage>.py` (recipes/ comes first on sys.path), so the select stage's script is select_data.py.
STAGE_SCRIPTS = {"select": "select_data"}


def available_recipes() -> list[str]:
    """Stage names (``vital.stages.STAGES``), sorted."""
    from vital.stages import STAGES

    return sorted(STAGES)


def load_recipe(name: str) -> ModuleType:
    """The module of stage ``name`` (``vital.stages.<name>``; ``-`` and ``_`` are interchangeable, and the script
    name ``select_data`` is the ``select`` stage)."""
    from vital.stages import STAGES

    stem = name.replace("-", "_")
    stem = {script: stage for stage, script in STAGE_SCRIPTS.items()}.get(stem, stem)
    if stem not in STAGES:
        import difflib

        close = difflib.get_close_matches(stem, [*STAGES, "stand_in", "hub"], n=1)
        hint = f"; did you mean {close[0].replace('stand_in', 'stand-in')!r}?" if close else ""
        commands = ", ".join([*available_recipes(), "hub", "stand-in"])
        raise SystemExit(f"unknown stage {name!r}{hint} (commands: {commands})")
    return importlib.import_module(f"vital.stages.{stem}")


load_stage = load_recipe


def process_state(cpu: bool = False) -> Any:
    """This process's ``accelerate.PartialState``, made the same way by every stage.

    Under ``accelerate launch`` (or ``torchrun``) on a machine without CUDA the launched processes are gloo processes
    on the CPU. accelerate only treats them as one run when ``cpu=True``: otherwise each would be "process 0 of 1"
    and do the whole job (every process sends every request, and more than one pushes). The API stages need no
    accelerator at all, so this matters even on a machine whose GPUs they leave alone.

    Raises:
        RuntimeError: the launcher started several processes but accelerate sees fewer (the first ``PartialState``
            of the process was made elsewhere without ``cpu``): refused before any work is done.
    """
    import torch
    from accelerate import PartialState

    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    state = PartialState(cpu=cpu or (launched > 1 and not torch.cuda.is_available()))
    if state.num_processes != launched:
        raise RuntimeError(
            f"the launcher started {launched} processes but accelerate sees {state.num_processes} "
            f"({state.distributed_type}): each would do the whole run and push. Launch with a config that fits this "
            "machine (accelerate_configs/cpu.yaml on a machine without a GPU)"
        )
    return state


def setup_logging(level: int | str = logging.INFO, main_process: bool = True) -> logging.Logger:
    """Recipe logging: INFO on the main process, WARNING on the others (as in the alignment-handbook scripts)."""
    import datasets
    import transformers

    level = level if main_process else logging.WARNING
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
        level=level,
    )
    numeric = logging.getLevelName(level) if isinstance(level, str) else level
    # The libraries say a lot at INFO; their warnings are what a recipe user needs.
    datasets.utils.logging.set_verbosity(max(numeric, logging.WARNING))
    transformers.utils.logging.set_verbosity(max(numeric, logging.WARNING))
    logging.getLogger("vital").setLevel(numeric)
    # One line per HTTP request (httpx's, or the httpx2 the openai client uses: "HTTP Request: POST ..." at INFO) is
    # DEBUG detail: thousands of them on a paper-size run. The progress line carries rate, cost and failures.
    for name in PER_REQUEST_LOGGERS:
        http_logger = logging.getLogger(name)
        if not any(isinstance(f, _PerRequestToDebug) for f in http_logger.filters):
            http_logger.addFilter(_PerRequestToDebug())
    return logging.getLogger("vital")


PER_REQUEST_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2", "openai", "openai._base_client", "uvicorn.access")
"""Loggers whose INFO records are per-request lines; :func:`setup_logging` logs them at DEBUG."""


class _PerRequestToDebug(logging.Filter):
    """Re-level a per-request INFO record to DEBUG, and drop it unless the ``vital`` logger shows DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger("vital").isEnabledFor(logging.DEBUG)


def format_table(header: Sequence[str], rows: Iterable[Sequence], footer: Sequence | None = None) -> str:
    """Columns padded to their widest cell, a rule under the header (and above the footer, if any)."""
    body = [[str(c) for c in row] for row in [header, *rows, *([footer] if footer is not None else [])]]
    widths = [max(len(row[i]) for row in body) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in body]
    rule = "  ".join("-" * w for w in widths)
    lines.insert(1, rule)
    if footer is not None:
        lines.insert(len(lines) - 1, rule)
    return "\n".join(lines)


def artifact_table(results: Iterable[PushResult], headline: dict[str, str] | None = None) -> str:
    """A plain-text table of pushed artifacts: repo, type, branch, commit, where it is, and a headline figure."""
    headline = headline or {}
    header = ("repo", "type", "branch", "commit", "new", "headline", "location")
    rows = [
        (
            r.repo_id,
            r.repo_type,
            r.revision,
            r.commit[:12],
            "yes" if r.created else "no",
            headline.get(r.repo_id, ""),
            r.location,
        )
        for r in results
    ]
    return format_table(header, rows)


def last_complete_checkpoint(output_dir: str | Path, before: str | Path | None = None) -> str | None:
    """The newest ``checkpoint-N`` in ``output_dir`` that was saved to the end (older than ``before``, if given), or
    None.

    The Trainer writes ``trainer_state.json`` last, so a checkpoint without it was cut off mid-save (a killed run);
    it is skipped with a warning and training resumes from the one before (`get_last_checkpoint` would pick it and
    the resume would fail).
    """
    import json

    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    steps = []
    for path in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        suffix = path.name.rsplit("-", 1)[-1]
        if path.is_dir() and suffix.isdigit():
            steps.append((int(suffix), path))
    limit = int(Path(before).name.rsplit("-", 1)[-1]) if before is not None else None
    for step, path in sorted(steps, reverse=True):
        if limit is not None and step >= limit:
            continue
        try:
            json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):
            logging.getLogger("vital").warning("skipping %s: it was not saved to the end", path)
            continue
        return str(path)
    return None
