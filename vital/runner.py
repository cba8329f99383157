"""What every recipe shares: finding a recipe script by name, logging, and the table of pushed artifacts."""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType

from vital.hub import PushResult


RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


def available_recipes() -> list[str]:
    """Stage names: the ``recipes/<name>.py`` scripts."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.py") if not p.stem.startswith("_"))


def load_recipe(name: str) -> ModuleType:
    """Import ``recipes/<name>.py`` (``-`` and ``_`` are interchangeable) as a module."""
    stem = name.replace("-", "_")
    path = RECIPES_DIR / f"{stem}.py"
    if not path.is_file():
        raise SystemExit(f"unknown stage {name!r}; available: {', '.join(available_recipes())}")
    module_name = f"vital_recipe_{stem}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


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


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest ``checkpoint-N`` in ``output_dir`` that was saved to the end, or None.

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
    for _, path in sorted(steps, reverse=True):
        try:
            json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):
            logging.getLogger("vital").warning("skipping %s: it was not saved to the end", path)
            continue
        return str(path)
    return None
