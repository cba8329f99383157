"""Selector metrics against hand-computed values, ties included."""

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score
from transformers import EvalPrediction

from vital.selector.metrics import (
    average_precision,
    clinician_alignment,
    compute_metrics,
    mean_average_precision,
    normalized_mean_rank,
    pair_accuracy,
    preference_metrics,
    roc_auc,
)


# Five items, one tie across the classes: 0.9 (+), 0.8 (+), 0.8 (-), 0.3 (-), 0.1 (+).
SCORES = [0.9, 0.8, 0.8, 0.3, 0.1]
LABELS = [1, 1, 0, 0, 1]


def test_pair_accuracy_counts_a_tie_as_half():
    # wins, tie, loss, win
    assert pair_accuracy([3, 1, 2, 5], [1, 1, 4, 0]) == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert clinician_alignment([1.0, 2.0], [2.0, 2.0]) == pytest.approx(0.25)


def test_a_constant_scorer_is_at_chance():
    assert pair_accuracy([0.0] * 4, [0.0] * 4) == 0.5
    assert roc_auc([1.0] * 4, [1, 0, 1, 0]) == 0.5


def test_auc_is_mann_whitney_with_ties_as_half():
    # positive-negative pairs: (.9,.8) 1, (.9,.3) 1, (.8,.8) 0.5, (.8,.3) 1, (.1,.8) 0, (.1,.3) 0  -> 3.5 / 6
    assert roc_auc(SCORES, LABELS) == pytest.approx(3.5 / 6)
    assert roc_auc(SCORES, LABELS) == pytest.approx(roc_auc_score(LABELS, SCORES))


def test_normalized_mean_rank_averages_tied_ranks():
    # ranks from the top: .9 -> 1, the two .8 -> 2.5 each, .3 -> 4, .1 -> 5; positives 1, 2.5, 5
    assert normalized_mean_rank(SCORES, LABELS) == pytest.approx((1 + 2.5 + 5) / 3 / 5)
    assert normalized_mean_rank([3, 2, 1], [1, 0, 0]) == pytest.approx(1 / 3)  # the best possible with n = 3


def test_average_precision_takes_a_tie_as_one_threshold():
    # thresholds: .9 -> P 1/1, R 1/3; .8 (one +, one -) -> P 2/3, R 2/3; .3 -> no gain; .1 -> P 3/5, R 1
    expected = (1 / 3) * 1 + (1 / 3) * (2 / 3) + (1 / 3) * (3 / 5)
    assert average_precision(SCORES, LABELS) == pytest.approx(expected)
    assert average_precision(SCORES, LABELS) == pytest.approx(average_precision_score(LABELS, SCORES))


def test_map_averages_over_groups_that_hold_a_positive():
    scores = [0.9, 0.1, 0.5, 0.4, 0.3, 0.7, 0.2]
    labels = [0, 1, 1, 0, 1, 0, 0]
    groups = ["a", "a", "b", "b", "b", "c", "c"]  # c has no positive and does not count
    # a: the positive comes second -> 1/2; b: positives at 1 and 3 -> (1 + 2/3) / 2
    assert mean_average_precision(scores, labels, groups) == pytest.approx((0.5 + (1 + 2 / 3) / 2) / 2)


def test_nothing_to_measure_is_nan():
    assert math.isnan(pair_accuracy([], []))
    assert math.isnan(roc_auc([1.0, 2.0], [1, 1]))
    assert math.isnan(normalized_mean_rank([1.0], [0]))
    assert math.isnan(average_precision([1.0], [0]))


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError):
        pair_accuracy([1, 2], [1])
    with pytest.raises(ValueError):
        roc_auc([1, 2], [1])


def test_preference_metrics_split_judge_and_clinician_pairs():
    chosen = [2.0, 1.0, 0.0, 3.0]
    rejected = [1.0, 1.0, 1.0, 0.0]
    sources = [0, 0, 1, 1]  # model, model, clinician, clinician
    metrics = preference_metrics(chosen, rejected, sources)
    assert metrics["pair_accuracy"] == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert metrics["judge_accuracy"] == pytest.approx(0.75)
    assert metrics["clinician_alignment"] == pytest.approx(0.5)
    pooled, positive = chosen + rejected, [1] * 4 + [0] * 4
    assert metrics["auc"] == pytest.approx(roc_auc_score(positive, pooled))
    assert metrics["map"] == pytest.approx(average_precision_score(positive, pooled))
    assert "clinician_alignment" not in preference_metrics(chosen, rejected, [0, 0, 0, 0])


def test_compute_metrics_reads_the_trainers_predictions():
    predictions = np.array([[2.0, 1.0], [0.0, 1.0]])  # (chosen, rejected) per pair
    metrics = compute_metrics(EvalPrediction(predictions=predictions, label_ids=np.array([0.0, 1.0])))
    assert metrics["pair_accuracy"] == 0.5
    assert metrics["judge_accuracy"] == 1.0
    assert metrics["clinician_alignment"] == 0.0
