"""The campaign view's numbers, for whoever runs an annotation campaign (the ``campaign`` role).

- **Progress**: items annotated by each annotator, and when they last saved.
- **Agreement so far**: for every pair of annotators on the items both annotated, percent agreement and Cohen's kappa
  (scikit-learn's ``cohen_kappa_score``; quadratic weights for 0-10 scores) with a 95 % percentile bootstrap interval
  over items (`BOOTSTRAP_RESAMPLES` resamples, fixed seed; resamples where kappa is undefined are left out; none
  below `MIN_ITEMS_FOR_INTERVAL` shared items).
- **Conflicts**: items whose annotators disagree (different labels; for scores, a spread over `SCORE_TOLERANCE`).
- **Adjudication**: the campaign lead's decision on a conflict, saved like an annotation (``role = "adjudicator"``)
  in the store's ``adjudication/`` folder. The lead sees the preference answers in an order drawn for them, and each
  annotator's vote mapped to that order: adjudicating does not unblind anyone.
- **The adjudicated set**: one row per annotated item, the consensus label where annotators agree, the lead's decision
  where they did not (unresolved conflicts are left out and counted).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vital.annotate.export import agreement_label
from vital.annotate.store import MAX_COMMENT_CHARS, Annotation, check_annotator, check_length
from vital.annotate.tasks import AnnotationTask, shown_order


BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
SCORE_TOLERANCE = 2  # rating: scores further apart than this are a conflict
MIN_ITEMS_FOR_INTERVAL = 10  # below this a bootstrap interval is degenerate or meaningless: reported as n/a
PLAIN_LABELS = {"tie": "same quality", "keep": "keep", "reject": "reject"}


@dataclass(frozen=True)
class PairKappa:
    """Agreement of two annotators on their shared items, with the kappa's bootstrap interval."""

    annotator_a: str
    annotator_b: str
    n: int
    percent: float
    kappa: float  # NaN when undefined
    low: float
    high: float


SCORE_LABELS = list(range(11))


def kappa(a: Sequence, b: Sequence, weights: str | None = None) -> float:
    """Cohen's kappa from scikit-learn's ``cohen_kappa_score`` (NaN when undefined: a single label used by both).
    Weighted kappa (ordered 0-10 scores) measures distances on the full 0-10 scale."""
    from sklearn.metrics import cohen_kappa_score

    if weights is None:  # nominal labels: compare them as text
        a, b = [str(x) for x in a], [str(x) for x in b]
    if len(set(a) | set(b)) < 2:
        return math.nan
    labels = SCORE_LABELS if weights is not None else None
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(cohen_kappa_score(a, b, weights=weights, labels=labels))


def resampled_kappas(a: Sequence, b: Sequence, index: np.ndarray, weights: str | None = None) -> np.ndarray:
    """Cohen's kappa of each resample (a row of ``index``: item positions), all at once: the formula of
    ``cohen_kappa_score`` (``1 - sum(w * observed) / sum(w * expected)``) on per-resample confusion matrices, so a
    thousand resamples take milliseconds. NaN where undefined."""
    if weights is None:
        labels = sorted({str(x) for x in a} | {str(x) for x in b})
        code = {label: i for i, label in enumerate(labels)}
        a_codes = np.array([code[str(x)] for x in a])
        b_codes = np.array([code[str(x)] for x in b])
        k = len(labels)
        w = 1.0 - np.eye(k)
    else:
        a_codes, b_codes, k = np.asarray(a, dtype=int), np.asarray(b, dtype=int), len(SCORE_LABELS)
        grid = np.arange(k)
        w = np.abs(grid[:, None] - grid[None, :]).astype(float)
        w = w**2 if weights == "quadratic" else w
    index = np.atleast_2d(index)
    resamples, n = index.shape
    cells = a_codes[index] * k + b_codes[index] + (np.arange(resamples) * k * k)[:, None]
    observed = np.bincount(cells.ravel(), minlength=resamples * k * k).reshape(resamples, k, k) / n
    expected = observed.sum(axis=2)[:, :, None] * observed.sum(axis=1)[:, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - (w * observed).sum(axis=(1, 2)) / (w * expected).sum(axis=(1, 2))


def bootstrap_kappa(
    a: Sequence,
    b: Sequence,
    weights: str | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """The 95 % percentile bootstrap interval of Cohen's kappa over items (NaN, NaN when it cannot be estimated)."""
    rng = np.random.default_rng(seed)
    values = resampled_kappas(a, b, rng.integers(0, len(a), (resamples, len(a))), weights)
    values = values[np.isfinite(values)]
    if len(values) < resamples // 2:  # mostly undefined: too few items or labels for an interval
        return math.nan, math.nan
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


class Campaign:
    """The campaign view of one task (see the module docstring)."""

    def __init__(self, task: AnnotationTask):
        self.task = task

    @property
    def store(self):
        return self.task.store

    def latest(self) -> dict[str, dict[str, Annotation]]:
        """``{annotator: {item id: last annotation}}`` on this task's items."""
        out = {}
        for annotator, per_item in self.store.all_latest(self.task.name, self.task.dataset).items():
            kept = {i: a for i, a in per_item.items() if i in self.task.items.index}
            if kept:
                out[annotator] = kept
        return out

    # -- progress and agreement -----------------------------------------------------------------------------------
    def progress(self) -> list[dict[str, Any]]:
        """One row per annotator: items done, of how many, share, last save."""
        total = len(self.task)
        return [
            {
                "annotator": annotator,
                "done": len(per_item),
                "of": total,
                "share": f"{len(per_item) / total:.0%}" if total else "n/a",
                "last saved (UTC)": max(a.time for a in per_item.values())[:19].replace("T", " "),
            }
            for annotator, per_item in sorted(self.latest().items())
        ]

    def agreement(self, resamples: int = BOOTSTRAP_RESAMPLES) -> list[PairKappa]:
        """Every annotator pair with at least two shared items: percent agreement, kappa and its interval."""
        labels = {a: {i: agreement_label(x) for i, x in per.items()} for a, per in self.latest().items()}
        weights = "quadratic" if self.task.name == "rating" else None
        out = []
        names = sorted(labels)
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                shared = sorted(set(labels[first]) & set(labels[second]))
                if len(shared) < 2:
                    continue
                a = [labels[first][s] for s in shared]
                b = [labels[second][s] for s in shared]
                percent = sum(x == y for x, y in zip(a, b, strict=True)) / len(a)
                low, high = (
                    bootstrap_kappa(a, b, weights, resamples)
                    if len(shared) >= MIN_ITEMS_FOR_INTERVAL
                    else (math.nan,) * 2
                )
                out.append(PairKappa(first, second, len(shared), percent, kappa(a, b, weights), low, high))
        return out

    # -- conflicts and adjudication -------------------------------------------------------------------------------
    def votes(self) -> dict[str, dict[str, Annotation]]:
        """``{item id: {annotator: last annotation}}`` for every annotated item."""
        out: dict[str, dict[str, Annotation]] = {}
        for annotator, per_item in self.latest().items():
            for item_id, annotation in per_item.items():
                out.setdefault(item_id, {})[annotator] = annotation
        return dict(sorted(out.items(), key=lambda kv: self.task.items.index[kv[0]]))

    def is_conflict(self, votes: dict[str, Annotation]) -> bool:
        if len(votes) < 2:
            return False
        labels = [agreement_label(a) for a in votes.values()]
        if self.task.name == "rating":
            return max(labels) - min(labels) > SCORE_TOLERANCE
        return len(set(labels)) > 1

    def conflicts(self, lead: str) -> list[dict[str, Any]]:
        """The items annotators disagree on, each vote in ``lead``'s terms, and the decision if there is one."""
        decided = self.store.adjudications(self.task.name, self.task.dataset)
        rows = []
        for item_id, votes in self.votes().items():
            if not self.is_conflict(votes):
                continue
            rows.append(
                {
                    "item": item_id,
                    "position": self.task.items.index[item_id] + 1,
                    "votes": "; ".join(f"{a}: {self.plain(v, lead)}" for a, v in sorted(votes.items())),
                    "decision": self.plain(decided[item_id], lead) if item_id in decided else "",
                }
            )
        return rows

    def plain(self, annotation: Annotation, lead: str) -> str:
        """An annotation in words the lead can act on without learning any source: preference sides are mapped to
        the order the lead sees."""
        if self.task.name == "preference":
            if annotation.label == "tie":
                return "same quality"
            lead_a, _ = shown_order(lead, annotation.item_id, self.task.salt)
            return "answer A" if annotation.label == lead_a else "answer B"
        if self.task.name == "rating":
            return f"score {annotation.score:g}"
        if annotation.role == "adjudicator":
            return annotation.choice
        return {"accept": "kept", "edit": "corrected", "reject": "rejected"}.get(annotation.label, annotation.label)

    def options(self, item_id: str, lead: str) -> list[tuple[str, str]]:
        """The decisions the lead may take on ``item_id``, as (words shown, value)."""
        if self.task.name == "preference":
            return [("Answer A", "A"), ("Answer B", "B"), ("Same quality", "tie")]
        if self.task.name == "rating":
            return [(str(s), str(s)) for s in range(11)]
        votes = self.votes().get(item_id, {})
        kept = [a for a, v in sorted(votes.items()) if v.label != "reject" and v.messages]
        return [(f"keep {a}'s version", f"keep:{a}") for a in kept] + [("reject", "reject")]

    def adjudicate(self, lead: str, item_id: str, decision: str, comment: str = "", session: str = "") -> Annotation:
        """Save the lead's decision on ``item_id`` (see `options`) and return it."""
        lead = check_annotator(lead)
        check_length("comment", comment, MAX_COMMENT_CHARS)
        if item_id not in self.task.items.index:
            raise ValueError(f"item {item_id!r} is not among the {len(self.task)} items")
        values = {value for _, value in self.options(item_id, lead)}
        if decision not in values:
            raise ValueError(f"choose one of {sorted(values)} for {item_id}")
        record = Annotation(
            task=self.task.name,
            dataset=self.task.dataset,
            commit=self.task.items.ref.commit,
            item_id=item_id,
            annotator=lead,
            choice=decision,
            label=decision,
            comment=(comment or "").strip(),
            session=session,
            guidelines=self.task.guidelines.version,
            role="adjudicator",
        )
        if self.task.name == "preference":
            order = shown_order(lead, item_id, self.task.salt)
            record.shown = {"A": order[0], "B": order[1]}
            record.label = "tie" if decision == "tie" else record.shown[decision]
        elif self.task.name == "rating":
            record.choice, record.score, record.label = "score", float(decision), decision
        elif decision.startswith("keep:"):
            source = self.votes()[item_id][decision.split(":", 1)[1]]
            record.messages, record.label = source.messages, "keep"
            record.shown = {"kept_version_of": source.annotator}
        return self.store.append(record)

    # -- the adjudicated set ------------------------------------------------------------------------------------------
    def adjudicated_set(self) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """One row per annotated item: the consensus or the lead's decision; and counts (unresolved conflicts)."""
        decided = self.store.adjudications(self.task.name, self.task.dataset)
        rows, counts = [], {"items": 0, "consensus": 0, "adjudicated": 0, "unresolved": 0}
        for item_id, votes in self.votes().items():
            counts["items"] += 1
            record: dict[str, Any] = {
                "item_id": item_id,
                "dataset": self.task.dataset,
                "annotators": sorted(votes),
                "votes": json.dumps({a: v.label for a, v in sorted(votes.items())}, sort_keys=True),
            }
            if item_id in decided:
                decision = decided[item_id]
                record.update(label=decision.label, score=decision.score, decided_by="adjudication")
                record.update(adjudicator=decision.annotator, messages=decision.messages)
                counts["adjudicated"] += 1
            elif self.is_conflict(votes):
                counts["unresolved"] += 1
                continue
            else:
                first = next(iter(votes.values()))
                score = statistics.mean(v.score for v in votes.values()) if self.task.name == "rating" else None
                label = f"{score:g}" if score is not None else str(agreement_label(first))
                if self.task.name == "preference":
                    label = first.label
                record.update(label=label, score=score, decided_by="consensus", adjudicator="")
                record["messages"] = next((v.messages for v in votes.values() if v.messages), None)
                counts["consensus"] += 1
            record["messages"] = json.dumps(record["messages"]) if record.get("messages") else ""
            rows.append(record)
        return rows, counts
