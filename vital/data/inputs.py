"""What each stage reads from its input datasets, checked before any work: a missing column is one error that names
the stage, the dataset (``repo@revision``, the commit and config it resolved to) and the columns missing, instead of a
bare ``KeyError`` halfway through a run::

    candidates_ref = hub.ref(args.candidates_repo, args.candidates_revision)
    candidates = hub.load_dataset(args.candidates_repo, revision=candidates_ref.commit, split="train")
    require_columns(candidates, "rate", "candidates", candidates_ref)

Public API: :data:`STAGE_INPUTS`, :class:`MissingColumnsError`, :func:`require_columns`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


# stage -> input role -> what it reads: each entry is a column, or a tuple of alternative column groups of which one
# group must be present in full (e.g. SFT reads messages, LLaVA conversations, or image + caption pairs).
STAGE_INPUTS: Mapping[str, Mapping[str, Sequence[str | tuple[tuple[str, ...], ...]]]] = {
    "generate": {
        "pairs": ("id", "image", "caption", "modality"),
        "demos": ("id", "messages", "modality"),
    },
    "rate": {"candidates": ("id", "images", "messages")},
    "train_selector": {
        "candidates": ("id", "images", "messages"),
        "ratings": ("candidate_id", "turn", "score"),
    },
    "select": {"candidates": ("id", "images", "messages")},
    "sft": {"train": ((("messages",), ("conversations",), ("image", "caption")),)},
    "evaluate": {"benchmark": ("question", "answer", (("image",), ("img_name",), ("image_name",)))},
    "curate_demos": {
        "pairs": ("id", "image", "caption", "modality"),
        "demos": ("id", "messages", "modality"),
    },
}


class MissingColumnsError(ValueError):
    """An input dataset lacks columns its stage reads (the message names the stage, dataset, commit and columns)."""

    def __init__(self, message: str, stage: str, role: str, missing: list[str]) -> None:
        super().__init__(message)
        self.stage, self.role, self.missing = stage, role, missing


def _where(ref: Any) -> str:
    """``repo@revision (commit <12>, config <name>)`` from an `ArtifactRef` (or a plain string)."""
    if isinstance(ref, str):
        return ref
    text = f"{ref.repo_id}@{ref.revision}"
    details = []
    if getattr(ref, "commit", None) and ref.commit != ref.revision:
        details.append(f"commit {ref.commit[:12]}")
    details.append(f"config {getattr(ref, 'config', None) or 'default'}")
    return f"{text} ({', '.join(details)})"


def require_columns(
    dataset: Any,
    stage: str,
    role: str,
    ref: Any,
    columns: Sequence[str | tuple[tuple[str, ...], ...]] | None = None,
) -> None:
    """Raise :class:`MissingColumnsError` unless ``dataset`` has every column ``stage`` reads from its ``role`` input.

    Args:
        dataset: a `datasets.Dataset` (anything with ``column_names``).
        stage, role: which entry of :data:`STAGE_INPUTS` to check (``"rate"``, ``"candidates"``).
        ref: where the dataset came from: an `ArtifactRef` (repo, revision, commit, config) or a description.
        columns: what to require instead of the table's entry.
    """
    wanted = STAGE_INPUTS[stage][role] if columns is None else columns
    present = set(dataset.column_names)
    missing: list[str] = []
    for entry in wanted:
        if isinstance(entry, str):
            if entry not in present:
                missing.append(repr(entry))
        elif not any(set(group) <= present for group in entry):
            missing.append("one of " + " or ".join("+".join(repr(c) for c in group) for group in entry))
    if missing:
        raise MissingColumnsError(
            f"{stage}: the {role} dataset {_where(ref)} has no column {', '.join(missing)}, which this stage reads. "
            f"Its columns: {', '.join(sorted(present)) or 'none'}. Is it the right repo and revision?",
            stage,
            role,
            missing,
        )
