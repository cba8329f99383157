"""Selector metrics (``docs/design.md``, Selector): pair accuracy, clinician alignment, AUC, mean rank, MAP.

Conventions, the same in every function:

- **Ties.** A pair whose two scores are equal counts as half right (0.5) in :func:`pair_accuracy` and
  :func:`clinician_alignment`: the selector has not told the two apart, and a constant scorer must land at 0.5, not
  at 0 or 1. Ranks of tied scores are averaged (the Mann–Whitney convention), in :func:`roc_auc` and
  :func:`normalized_mean_rank`. :func:`roc_auc` and :func:`average_precision` are scikit-learn's (tied scores are
  one threshold).
- **Ranks.** Rank 1 is the highest score.
- **Empty input.** A metric with nothing to measure (no pairs, no positives or no negatives) is ``nan``.

:func:`compute_metrics` is the ``compute_metrics`` of :class:`vital.selector.trainer.SelectorTrainer`: the trainer's
predictions are ``(n_pairs, 2)`` rewards (chosen, rejected) and its labels are the pairs' sources (1 clinician,
0 model).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


__all__ = [
    "alignment_interval",
    "average_precision",
    "clinician_alignment",
    "compute_metrics",
    "mean_average_precision",
    "normalized_mean_rank",
    "official_mean_rank",
    "pair_accuracy",
    "preference_metrics",
    "roc_auc",
]

ArrayLike = Sequence[float] | np.ndarray


def _as_1d(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.isnan(array).any():
        raise ValueError(f"{name} contains NaN")
    return array


def pair_accuracy(chosen_scores: ArrayLike, rejected_scores: ArrayLike) -> float:
    """Share of pairs whose chosen side scores higher; a tie counts 0.5. ``nan`` for no pairs."""
    chosen, rejected = _as_1d(chosen_scores, "chosen_scores"), _as_1d(rejected_scores, "rejected_scores")
    if chosen.shape != rejected.shape:
        raise ValueError(f"{chosen.size} chosen scores for {rejected.size} rejected scores")
    if chosen.size == 0:
        return float("nan")
    return float(np.mean((chosen > rejected) + 0.5 * (chosen == rejected)))


def clinician_alignment(chosen_scores: ArrayLike, rejected_scores: ArrayLike) -> float:
    """Pair accuracy on clinician pairs: how often the selector agrees with the clinician (ties 0.5)."""
    return pair_accuracy(chosen_scores, rejected_scores)


def _average_ranks_descending(scores: np.ndarray) -> np.ndarray:
    """Rank 1 = highest score; tied scores share the mean of the ranks they span."""
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size, dtype=np.float64)
    start = 0
    while start < scores.size:
        end = start
        while end + 1 < scores.size and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def _labels(labels: ArrayLike, n: int) -> np.ndarray:
    array = np.asarray(labels).reshape(-1).astype(bool)
    if array.size != n:
        raise ValueError(f"{array.size} labels for {n} scores")
    return array


def roc_auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve (``sklearn.metrics.roc_auc_score``): P(positive scores above negative) + 0.5 P(tie).

    ``nan`` when there are no positives or no negatives.
    """
    from sklearn.metrics import roc_auc_score

    scores = _as_1d(scores, "scores")
    positive = _labels(labels, scores.size)
    if positive.all() or not positive.any():
        return float("nan")
    return float(roc_auc_score(positive, scores))


def normalized_mean_rank(scores: ArrayLike, labels: ArrayLike) -> float:
    """Mean rank of the positives divided by the number of items, in ``(0, 1]``: lower is better.

    Ranks run from 1 (highest score) to n, ties averaged. With ``p`` positives the best possible value is
    ``(p + 1) / (2n)``; a random scorer gives ``(n + 1) / (2n)`` (about 0.5). ``nan`` without positives.
    """
    scores = _as_1d(scores, "scores")
    positive = _labels(labels, scores.size)
    if not positive.any():
        return float("nan")
    return float(_average_ranks_descending(scores)[positive].mean() / scores.size)


def official_mean_rank(scores: ArrayLike, labels: ArrayLike) -> float:
    """The official code's "global mean rank": the positives' mean 0-based rank (0 = highest score) divided by the
    number of items, in ``[0, 1)``; lower is better. Ties are averaged here (the official code breaks them by sort
    order). Equals ``normalized_mean_rank - 1 / n``. ``nan`` without positives."""
    scores = _as_1d(scores, "scores")
    positive = _labels(labels, scores.size)
    if not positive.any():
        return float("nan")
    return float((_average_ranks_descending(scores)[positive] - 1).mean() / scores.size)


def average_precision(scores: ArrayLike, labels: ArrayLike) -> float:
    """Average precision (``sklearn.metrics.average_precision_score``): sum over score thresholds of (recall gain) x
    (precision), tied scores one threshold. ``nan`` without positives."""
    from sklearn.metrics import average_precision_score

    scores = _as_1d(scores, "scores")
    positive = _labels(labels, scores.size)
    if not positive.any():
        return float("nan")
    return float(average_precision_score(positive, scores))


def mean_average_precision(scores: ArrayLike, labels: ArrayLike, groups: Sequence[Any]) -> float:
    """Mean of :func:`average_precision` over groups (e.g. the candidates of one image) that hold a positive."""
    scores = _as_1d(scores, "scores")
    positive = _labels(labels, scores.size)
    groups = np.asarray(groups, dtype=object).reshape(-1)
    if groups.size != scores.size:
        raise ValueError(f"{groups.size} groups for {scores.size} scores")
    values = []
    for group in dict.fromkeys(groups.tolist()):
        mask = groups == group
        if positive[mask].any():
            values.append(average_precision(scores[mask], positive[mask]))
    return float(np.mean(values)) if values else float("nan")


def alignment_interval(alignment: float, n_pairs: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a pair accuracy measured on ``n_pairs`` pairs (``scipy.stats.binomtest``; ties,
    counted as half, are rounded to whole pairs). ``(nan, nan)`` without pairs.

    16 held-out pairs at 0.75 give about (0.51, 0.90): too wide to rank clinician weights.
    """
    from scipy.stats import binomtest

    if n_pairs <= 0 or math.isnan(alignment):
        return float("nan"), float("nan")
    successes = min(n_pairs, max(0, round(alignment * n_pairs)))
    interval = binomtest(successes, n_pairs).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def preference_metrics(
    chosen_scores: ArrayLike, rejected_scores: ArrayLike, sources: ArrayLike | None = None
) -> dict[str, float]:
    """Metrics of a selector on held-out pairs.

    ``pair_accuracy`` over all pairs; ``judge_accuracy`` over model pairs and ``clinician_alignment`` over clinician
    pairs when ``sources`` (1 clinician, 0 model) is given and the group is not empty. ``auc``, ``mean_rank`` and
    ``map`` pool the pairs' sides into one ranking, chosen sides as positives and rejected sides as negatives (a
    candidate in several pairs appears once per pair); ``mean_rank`` is 1-based over n (ours), ``mean_rank_0based``
    the official 0-based one.
    """
    chosen, rejected = _as_1d(chosen_scores, "chosen_scores"), _as_1d(rejected_scores, "rejected_scores")
    metrics = {"pair_accuracy": pair_accuracy(chosen, rejected)}
    if sources is not None:
        clinician = _labels(sources, chosen.size)
        if (~clinician).any():
            metrics["judge_accuracy"] = pair_accuracy(chosen[~clinician], rejected[~clinician])
        if clinician.any():
            metrics["clinician_alignment"] = clinician_alignment(chosen[clinician], rejected[clinician])
    pooled = np.concatenate([chosen, rejected])
    positive = np.r_[np.ones(chosen.size, bool), np.zeros(rejected.size, bool)]
    metrics["auc"] = roc_auc(pooled, positive)
    metrics["mean_rank"] = normalized_mean_rank(pooled, positive)
    metrics["mean_rank_0based"] = official_mean_rank(pooled, positive)
    metrics["map"] = average_precision(pooled, positive)
    return metrics


def compute_metrics(eval_pred: Any) -> dict[str, float]:
    """``compute_metrics`` for the trainer: ``predictions`` (n, 2) = (chosen, rejected) rewards, ``label_ids`` sources."""
    predictions = eval_pred.predictions
    if isinstance(predictions, tuple | list):
        predictions = predictions[0]
    predictions = np.asarray(predictions, dtype=np.float64).reshape(-1, 2)
    sources = getattr(eval_pred, "label_ids", None)
    return preference_metrics(predictions[:, 0], predictions[:, 1], sources)
