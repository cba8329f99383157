"""The items each annotation task shows, read from the hub at one commit.

============== ======================================================= =============================================
task           dataset (``--dataset repo@rev``)                        one item
============== ======================================================= =============================================
``demos``      the clusters repo's ``review`` config (pair columns +   a pair with a candidate conversation: the
               ``cluster``, ``distance``, ``rank_in_cluster``), joined first (by id) of ``--candidates`` for that
               with ``--candidates``; or a ``demos`` dataset           pair, or the demo's own ``messages``
``preference`` ``answer_pairs`` (``id``, ``images``, ``prompt``,       one question with its two answers; the
               ``answer_a``, ``answer_b``, ``question``, ...)          caption and mentions from ``--pairs``
``rating``     ``candidates`` (``id``, ``images``, ``messages``,       one question-answer turn,
               ``caption``, ``mentions``, ...)                         id ``<candidate id>#t<turn>``
============== ======================================================= =============================================

Rows are decoded one at a time, when shown; only ids and conversations are read up front.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vital.data.schemas import qa_turns
from vital.hub import ArtifactRef, Hub, parse_repo_ref


logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = {
    "demos": ("id", "image", "caption"),
    "preference": ("id", "images", "prompt", "answer_a", "answer_b"),
    "rating": ("id", "images", "messages"),
}


@dataclass
class TaskItems:
    """The items of one task: ids in display order, and a way to get the full row of each.

    Attributes:
        task: the task name.
        ref: the dataset the items come from, at the commit read (with its config).
        dataset: the loaded `datasets.Dataset` (images decoded lazily, row by row).
        ids: item ids, in the order annotators see them.
        rows: for each item, the dataset row index it comes from.
        turns: rating only, the question-answer index of each item within its candidate.
        pair_ids: the pair (figure) each item is about.
        conversations: demos only, ``{pair id: (candidate id, messages)}`` from the candidates (or the demos' own).
        inputs: every artifact read (the dataset and, for demos, the candidates), for the export's lineage.
        figures: ``{pair id: {"caption", "fig_label", "mentions"}}`` from the pairs (``--pairs``), for items whose
            rows lack the figure's text (answer pairs).
    """

    task: str
    ref: ArtifactRef
    dataset: Any
    ids: list[str]
    rows: list[int]
    turns: list[int] = field(default_factory=list)
    pair_ids: list[str] = field(default_factory=list)
    conversations: dict[str, tuple[str, list[dict[str, Any]]]] = field(default_factory=dict)
    inputs: list[ArtifactRef] = field(default_factory=list)
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)

    def figure_text(self, position: int) -> dict[str, Any]:
        """The caption, label and mentions of the item's figure from the pairs ({} when not given)."""
        return self.figures.get(self.pair_ids[position], {}) if self.pair_ids else {}

    def __len__(self) -> int:
        return len(self.ids)

    def __post_init__(self):
        self.index = {item_id: i for i, item_id in enumerate(self.ids)}
        if len(self.index) != len(self.ids):
            raise ValueError(f"{self.ref}: item ids are not unique")

    def row(self, position: int) -> dict[str, Any]:
        """The full dataset row (images decoded) of the item at ``position``."""
        return self.dataset[self.rows[position]]


def _config_names(hub: Hub, repo_id: str, commit: str) -> list[str]:
    card = hub.read_card(repo_id, commit)
    if card is None:
        return []
    return [c.get("config_name") for c in card.data.to_dict().get("configs") or []]


def _check_columns(dataset, task: str, ref: ArtifactRef) -> None:
    missing = [c for c in REQUIRED_COLUMNS[task] if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{ref} has no column(s) {missing} for the {task} task (columns: {dataset.column_names}); "
            f"see vital.annotate.items for what each task reads"
        )


def load_items(
    hub: Hub,
    task: str,
    dataset: str,
    config: str | None = None,
    split: str = "train",
    candidates: str | None = None,
    limit: int | None = None,
    warn: bool = True,
    pairs: str | None = None,
) -> TaskItems:
    """Read the items of ``task`` from ``dataset`` (``repo@revision``), pinned to the commit it resolves to now.

    Args:
        hub: where the datasets live.
        task: ``demos``, ``preference`` or ``rating``.
        dataset: ``repo_id@revision`` of the items.
        config: the dataset config; default ``review`` for demos when the repo has one, else the default config.
        split: the split to read.
        candidates: demos only: ``repo_id@revision`` of the candidates whose conversations are shown with the pairs.
        limit: show only the first ``limit`` items.
        warn: log a warning for demos items without a conversation to show.
        pairs: ``repo_id@revision`` of the figure-caption pairs: the caption and in-text mentions shown with items
            whose rows do not carry them (the preference task's answer pairs). Preference default: the pairs the
            answer pairs were generated from, at the commit their card's lineage names.
    """
    if task not in REQUIRED_COLUMNS:
        raise ValueError(f"unknown task {task!r} (expected one of {tuple(REQUIRED_COLUMNS)})")
    repo_id, revision = parse_repo_ref(dataset)
    commit = hub.resolve(repo_id, revision)
    if config is None and task == "demos" and "review" in _config_names(hub, repo_id, commit):
        config = "review"
    ref = ArtifactRef(repo_id, "dataset", revision, commit, config)
    data = hub.load_dataset(repo_id, name=config, revision=commit, split=split)
    _check_columns(data, task, ref)
    inputs = [ref]
    ids: list[str] = []
    rows: list[int] = []
    turns: list[int] = []
    conversations: dict[str, tuple[str, list[dict[str, Any]]]] = {}

    if task == "rating":
        for row_index, (candidate_id, messages) in enumerate(zip(data["id"], data["messages"], strict=True)):
            for turn in range(len(qa_turns(messages))):
                ids.append(f"{candidate_id}#t{turn}")
                rows.append(row_index)
                turns.append(turn)
    else:
        ids = [str(i) for i in data["id"]]
        rows = list(range(len(data)))

    row_pairs = [str(p) for p in data["pair_id" if "pair_id" in data.column_names else "id"]]
    pair_ids = [row_pairs[r] for r in rows]
    if limit is not None and limit < len(ids):
        ids, rows, turns, pair_ids = ids[:limit], rows[:limit], turns[:limit], pair_ids[:limit]

    if task == "demos":
        # Conversations by item id: a demos dataset's own, else the first candidate (by id) written on the pair.
        if "messages" in data.column_names:
            for demo_id, messages in zip(data["id"], data["messages"], strict=True):
                conversations[str(demo_id)] = (str(demo_id), messages)
        if candidates:
            cand_repo, cand_revision = parse_repo_ref(candidates)
            cand_ref = ArtifactRef(cand_repo, "dataset", cand_revision, hub.resolve(cand_repo, cand_revision))
            inputs.append(cand_ref)
            cands = hub.load_dataset(cand_repo, revision=cand_ref.commit, split="train")
            cands = cands.select_columns(["id", "pair_id", "messages"])
            by_pair: dict[str, tuple[str, list]] = {}
            rows_by_id = sorted(zip(cands["id"], cands["pair_id"], cands["messages"], strict=True), key=lambda r: r[0])
            for cand_id, pair_id, messages in rows_by_id:
                by_pair.setdefault(pair_id, (cand_id, messages))
            for item_id, pair_id in zip(ids, pair_ids, strict=True):
                if item_id not in conversations and pair_id in by_pair:
                    conversations[item_id] = by_pair[pair_id]
        missing = sum(1 for i in ids if i not in conversations)
        if missing and warn:
            logger.warning("%d of %d pairs have no conversation to show: annotators may write one", missing, len(ids))

    figures: dict[str, dict[str, Any]] = {}
    if pairs is None and task == "preference" and "caption" not in data.column_names:
        pairs = _pairs_from_lineage(hub, repo_id, commit)
        if pairs is None and warn:
            logger.warning(
                "%s: no --pairs and no pairs in its card's lineage: figures are shown without captions", ref
            )
    if pairs:
        pairs_repo, pairs_revision = parse_repo_ref(pairs)
        pairs_ref = ArtifactRef(pairs_repo, "dataset", pairs_revision, hub.resolve(pairs_repo, pairs_revision))
        inputs.append(pairs_ref)
        text = hub.load_dataset(pairs_repo, revision=pairs_ref.commit, split="train")
        columns = [c for c in ("caption", "fig_label", "mentions") if c in text.column_names]
        wanted = set(pair_ids)
        for row in text.select_columns(["id", *columns]):
            if str(row["id"]) in wanted:
                figures[str(row["id"])] = {c: row[c] for c in columns}
        if warn and len(figures) < len(wanted):
            logger.warning(
                "%d of %d figures have no caption in %s", len(wanted) - len(figures), len(wanted), pairs_ref
            )

    items = TaskItems(task, ref, data, ids, rows, turns, pair_ids, conversations, inputs, figures)
    logger.info("%s task: %d items from %s", task, len(items), ref)
    return items


def _pairs_from_lineage(hub: Hub, repo_id: str, commit: str) -> str | None:
    """``repo@commit`` of the first dataset input in the card's lineage (the generation stage lists the figure-caption
    pairs first), or None."""
    from vital.cards import lineage_of

    card = hub.read_card(repo_id, commit)
    lineage = lineage_of(card) if card is not None else None
    for source in (lineage or {}).get("inputs") or []:
        if source.get("repo_type", "dataset") == "dataset" and source.get("repo_id") and source.get("commit"):
            logger.info("captions from %s@%s (the lineage of %s)", source["repo_id"], source["commit"][:12], repo_id)
            return f"{source['repo_id']}@{source['commit']}"
    return None


def first_image(row: Mapping[str, Any]):
    """The image shown for a row: ``image``, else the first of ``images``."""
    if row.get("image") is not None:
        return row["image"]
    images = row.get("images") or []
    return images[0] if images else None
