"""What the selector and sweep cards say about the clinician weight: gradient clipping that caps it, the settings a
selector was trained with, and clinician-alignment intervals too wide to rank the weights."""

from __future__ import annotations

import math

import pytest

from vital.hub import LocalHub
from vital.runner import load_recipe
from vital.selector import alignment_interval


CLIPPING_NOTE = "Gradient clipping caps the clinician weight"


def _train(root, tmp_path, *extra):
    args = ["--config", "recipes/quickstart/train_selector.yaml", "--hub", f"local:{root}/hub"]
    args += ["--output_dir", str(tmp_path / "out"), "--max_steps", "4", *extra]
    return load_recipe("train_selector").cli(args)


@pytest.mark.slow
def test_selector_card_says_when_clipping_caps_the_weight(rated_hub, tmp_path, caplog):
    hub = LocalHub(rated_hub / "hub")
    # weight 100 with clipping at 1.0: the recipe warns and the card says so
    with caplog.at_level("WARNING", logger="vital.selector.trainer"):
        _, model = _train(rated_hub, tmp_path, "--clinician_weight", "100", "--max_grad_norm", "1.0")
    assert any("gradient clipping is on" in r.getMessage() for r in caplog.records)
    card = hub.read_card("quickstart/selector", model.commit, "model").text
    assert CLIPPING_NOTE in card
    assert "| gradient clipping (max_grad_norm) | 1 |" in card
    assert "| pair-weight normalisation | training_set |" in card

    # no clipping, or weight 1: no note; the settings table shows what was used
    _, model = _train(rated_hub, tmp_path, "--clinician_weight", "100", "--max_grad_norm", "0")
    card = hub.read_card("quickstart/selector", model.commit, "model").text
    assert CLIPPING_NOTE not in card and "| gradient clipping (max_grad_norm) | off |" in card
    _, model = _train(
        rated_hub,
        tmp_path,
        "--clinician_weight",
        "1",
        "--max_grad_norm",
        "1.0",
        "--head_activation",
        "sigmoid",
        "--weight_normalization",
        "none",
    )
    card = hub.read_card("quickstart/selector", model.commit, "model").text
    assert CLIPPING_NOTE not in card
    assert "Sigmoid head" in card and "| head output | sigmoid |" in card
    assert "| pair-weight normalisation | none |" in card


def test_alignment_interval_is_wide_on_few_pairs():
    low, high = alignment_interval(0.75, 16)
    assert low < 0.52 and high > 0.88  # 16 pairs: 0.75 is hardly above chance
    low, high = alignment_interval(0.75, 1000)
    assert 0.72 < low < 0.75 < high < 0.78
    assert all(math.isnan(v) for v in alignment_interval(0.5, 0))


@pytest.mark.slow
def test_sweep_reports_the_interval_and_says_when_it_spans_chance(rated_hub, tmp_path, capsys):
    args = ["--config", "recipes/quickstart/sweep_clinician_weight.yaml", "--hub", f"local:{rated_hub}/hub"]
    args += ["--output_dir", str(tmp_path / "sweep"), "--weights", "1", "10", "--max_steps", "4"]
    args += ["--results_repo", "test/sweep-ci", "--max_grad_norm", "1.0"]
    (pushed,) = load_recipe("sweep_clinician_weight").cli(args)
    out = capsys.readouterr().out
    hub = LocalHub(rated_hub / "hub")
    results = hub.load_dataset("test/sweep-ci", revision=pushed.commit, split="train")
    for row in results:
        n = row["clinician_alignment_n"]
        assert n > 0
        assert (row["clinician_alignment_low"], row["clinician_alignment_high"]) == pytest.approx(
            alignment_interval(row["clinician_alignment"], n)
        )
        assert 0 <= row["map"] <= 1 and 0 <= row["auc"] <= 1 and 0 <= row["clinician_map"] <= 1
    card = hub.read_card("test/sweep-ci", pushed.commit).text
    # the quickstart's few sample clinician pairs: every interval spans 0.5, and the card and the table say so
    assert all(
        low <= 0.5 <= high
        for low, high in zip(results["clinician_alignment_low"], results["clinician_alignment_high"])
    )
    assert "Too few clinician pairs to rank the weights" in card and "(spans 0.5)" in card
    assert "A clinician-alignment interval spans 0.5" in out
    assert "Gradient clipping was on" in card
