"""Percent agreement and Cohen's kappa against values computed by hand (the working is in each test)."""

import math

import numpy as np
import pytest

from vital.annotate.agreement import agreement_markdown, cohen_kappa, pairwise_agreement, percent_agreement


def test_binary_kappa_by_hand():
    a = [1, 1, 1, 0, 0, 0, 1, 0, 1, 1]
    b = [1, 1, 0, 0, 0, 1, 1, 0, 1, 0]
    # alike on items 1, 2, 4, 5, 7, 8, 9: p_o = 7/10. a says 1 six times, b five times:
    # p_e = 0.6 * 0.5 + 0.4 * 0.5 = 0.5, so kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4.
    assert percent_agreement(a, b) == pytest.approx(0.7)
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_three_label_kappa_by_hand():
    a = ["answer_a", "answer_a", "answer_a", "answer_b", "answer_b", "tie"]
    b = ["answer_a", "answer_a", "answer_b", "answer_b", "tie", "tie"]
    # alike on 4 of 6: p_o = 2/3. a: 3 A, 2 B, 1 tie; b: 2 A, 2 B, 2 tie.
    # p_e = (3*2 + 2*2 + 1*2) / 36 = 1/3, so kappa = (2/3 - 1/3) / (2/3) = 0.5.
    assert percent_agreement(a, b) == pytest.approx(2 / 3)
    assert cohen_kappa(a, b) == pytest.approx(0.5)


def test_quadratic_weighted_kappa_by_hand():
    a, b = [0, 1, 2], [0, 2, 2]
    # w(i, j) = ((i - j) / 2)^2. Observed: (0 + 1/4 + 0) / 3 = 1/12.
    # Expected: a has 0, 1, 2 once each; b has 0 once and 2 twice:
    #   i=0: j=0 -> 0, j=2 -> 1*2*1 = 2; i=1: j=0 -> 1/4, j=2 -> 2 * 1/4 = 1/2; i=2: j=0 -> 1, j=2 -> 0
    #   total 3.75 / 9. kappa_w = 1 - (1/12) / (3.75/9) = 1 - 0.2 = 0.8.
    assert cohen_kappa(a, b, weights="quadratic") == pytest.approx(0.8)
    # Linear: w = |i - j| / 2. Observed 1/6; expected (2 + 1/2 + 1 + 1) / 9 = 0.5; kappa_w = 1 - (1/6)/(1/2) = 2/3.
    assert cohen_kappa(a, b, weights="linear") == pytest.approx(2 / 3)


def test_edge_cases():
    assert cohen_kappa(["A", "B", "A"], ["A", "B", "A"]) == pytest.approx(1.0)
    assert math.isnan(cohen_kappa(["A", "A"], ["A", "A"]))  # chance agreement is already perfect: undefined
    # systematic disagreement: p_o = 0, p_e = 0.5 -> kappa = -1
    assert cohen_kappa(["A", "B"], ["B", "A"]) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        cohen_kappa(["A"], ["A", "B"])
    with pytest.raises(ValueError):
        percent_agreement([], [])
    with pytest.raises(ValueError):
        cohen_kappa([1, 2], [1, 2], weights="cubic")


def test_matches_scikit_learn_on_random_labels():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.integers(0, 11, size=30).tolist()
        b = [x if rng.random() < 0.5 else int(rng.integers(0, 11)) for x in a]
        assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
        for weights in ("linear", "quadratic"):
            # scikit-learn weighs distances between label *positions*: give it the whole 0-10 scale so that
            # positions are the scores themselves (our weights use the scores' values).
            expected = cohen_kappa_score(a, b, labels=list(range(11)), weights=weights)
            assert cohen_kappa(a, b, weights) == pytest.approx(expected)


def test_pairwise_agreement_over_shared_items():
    labels = {
        "alice": {"q1": "A", "q2": "A", "q3": "B", "q4": "B"},
        "bob": {"q1": "A", "q2": "B", "q3": "B"},  # shares q1-q3 with alice
        "carol": {"q4": "B", "q5": "A"},  # shares q4 with alice only
    }
    report = pairwise_agreement(labels)
    pairs = {(p.annotator_a, p.annotator_b): p for p in report.pairs}
    assert set(pairs) == {("alice", "bob"), ("alice", "carol")}
    # alice/bob on q1-q3: A/A, A/B, B/B -> 2/3 alike; alice 2 A 1 B, bob 1 A 2 B -> p_e = (2+2)/9 = 4/9;
    # kappa = (2/3 - 4/9) / (5/9) = 0.4
    assert pairs[("alice", "bob")].n == 3
    assert pairs[("alice", "bob")].percent == pytest.approx(2 / 3)
    assert pairs[("alice", "bob")].kappa == pytest.approx(0.4)
    assert math.isnan(pairs[("alice", "carol")].kappa) and pairs[("alice", "carol")].percent == 1.0
    assert report.items_multiply_annotated == 4
    assert report.mean_percent == pytest.approx((2 / 3 * 3 + 1) / 4)
    assert report.mean_kappa == pytest.approx(0.4)  # the undefined pair is left out
    summary = report.to_dict()
    assert summary["pairs"][1]["kappa"] is None and summary["mean_kappa"] == pytest.approx(0.4)
    text = agreement_markdown(report, "labels")
    assert "| alice / bob | 3 | 66.7% | 0.400 |" in text and "n/a" in text


def test_no_shared_items():
    report = pairwise_agreement({"alice": {"q1": "A"}, "bob": {"q2": "B"}})
    assert report.pairs == [] and report.items_multiply_annotated == 0
    assert "no inter-annotator agreement" in agreement_markdown(report, "labels")
