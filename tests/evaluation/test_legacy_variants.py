"""LLaVA-Med's two published scoring scripts and the `evaluate` modules' inputs.

`legacy` is `run_eval.py` (closed hits behind a yes/no substring gate) and also reports its BLEU numbers;
`legacy_batch` is `run_eval_batch.py` (no gate). Expected values are worked out by hand in the comments.
"""

from pathlib import Path

import pytest

import vital
from vital.evaluation.vqa_metrics import (
    arrow_safe,
    from_arrow_safe,
    legacy_batch_closed_hit,
    legacy_bleu,
    legacy_closed_hit,
    score_vqa,
)


METRICS_DIR = Path(vital.__file__).parent / "metrics"

# (prediction, truth): run_eval.py needs "yes" or "no" somewhere in the prediction before it looks for the truth;
# run_eval_batch.py only looks for the truth.
CLOSED = [
    ("left lung", "left"),  # no yes/no substring: legacy miss; batch hit ("left" in "left lung")
    ("right side", "right"),  # legacy miss; batch hit
    ("yes", "no"),  # both miss
    ("no", "no"),  # both hit
]


def test_legacy_and_legacy_batch_differ_on_closed_items_without_yes_no():
    preds, truths = zip(*CLOSED, strict=True)
    types = ["CLOSED"] * len(CLOSED)
    legacy = score_vqa(preds, truths, types, mode="legacy")
    batch = score_vqa(preds, truths, types, mode="legacy_batch")
    assert legacy["item_scores"] == [0.0, 0.0, 0.0, 1.0] and legacy["closed_accuracy"] == 25.0
    assert batch["item_scores"] == [1.0, 1.0, 0.0, 1.0] and batch["closed_accuracy"] == 75.0
    assert [legacy_closed_hit(p, t) for p, t in CLOSED] == [False, False, False, True]
    assert [legacy_batch_closed_hit(p, t) for p, t in CLOSED] == [True, True, False, True]


def test_legacy_batch_open_numbers_equal_legacy_plus_open_hit():
    preds = ["the lesion is in the left lung", "a nodule"]
    truths = ["left lung", "mass"]
    types = ["OPEN", "OPEN"]
    legacy = score_vqa(preds, truths, types, mode="legacy")
    batch = score_vqa(preds, truths, types, mode="legacy_batch")
    assert {k: v for k, v in batch.items() if k not in ("mode", "open_hit")} == {
        k: v for k, v in legacy.items() if k != "mode"
    }
    assert batch["open_hit"] == 50.0  # "left lung" is a substring of the first prediction, "mass" of neither
    assert "open_hit" not in legacy


def test_legacy_reports_bleu_like_run_eval():
    # "a large mass in the liver" normalises to "large mass in liver" (articles dropped): identical -> 1 for all.
    assert legacy_bleu("a large mass in the liver", "Large mass in liver") == pytest.approx(
        {"bleu": 1.0, "bleu_1": 1.0, "bleu_2": 1.0, "bleu_3": 1.0}
    )
    # "large mass" against 4 reference words: unigram and bigram precision 1, brevity penalty exp(1 - 4/2) = 0.3679;
    # no trigram, so BLEU-3 and the 4-gram BLEU are (nltk, unsmoothed) 0.
    out = legacy_bleu("large mass", "large mass in liver")
    assert out["bleu_1"] == pytest.approx(0.36788, abs=1e-5) and out["bleu_2"] == pytest.approx(0.36788, abs=1e-5)
    assert out["bleu_3"] == pytest.approx(0.0, abs=1e-12) and out["bleu"] == pytest.approx(0.0, abs=1e-12)
    scored = score_vqa(["large mass", "a large mass in the liver"], ["large mass in liver"] * 2, ["OPEN", "OPEN"])
    assert scored["open_bleu_1"] == pytest.approx(100 * (0.36788 + 1) / 2, abs=1e-3)
    assert scored["open_bleu_3"] == pytest.approx(50.0, abs=1e-6)


def test_arrow_safe_round_trip_is_exact():
    texts = ["yes\ud800", "\udfff left", "plain", "\U000f0000 pua", "\U000f0800\ud801", ""]
    escaped = [arrow_safe(t) for t in texts]
    for text in escaped:
        text.encode("utf-8")  # storable
    assert [from_arrow_safe(t) for t in escaped] == texts
    assert len(set(escaped)) == len(texts)


@pytest.mark.parametrize(("module", "config", "mode"), [("legacy", None, "legacy"), ("legacy", "batch", "legacy_batch"),
                                                         ("strict", None, "strict")])  # fmt: skip
def test_evaluate_modules_score_lone_surrogates_like_score_vqa(module, config, mode, tmp_path):
    import evaluate

    metric = evaluate.load(str(METRICS_DIR / f"vqa_{module}"), config, cache_dir=str(tmp_path), keep_in_memory=True)
    preds = ["yes\ud800", "left lung\udc00", "\ud83d", "right side", "mass \ud800"]
    truths = ["yes", "left", "no", "right", "mass \udc00"]
    types = ["CLOSED", "CLOSED", "CLOSED", "CLOSED", "OPEN"]
    out = metric.compute(predictions=preds, references=truths, answer_types=types)
    assert out == score_vqa(preds, truths, types, mode=mode)
    assert out["mode"] == mode


def test_bleu_equals_nltk_sentence_bleu():
    import random
    import warnings

    from nltk.translate.bleu_score import sentence_bleu

    from vital.evaluation.vqa_metrics import BLEU_WEIGHTS, _bleu

    rng = random.Random(0)
    vocab = ["a", "b", "c", "d", "e"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(1500):
            pred = [rng.choice(vocab) for _ in range(rng.randint(0, 9))]
            truth = [rng.choice(vocab) for _ in range(rng.randint(0, 9))]
            ours = _bleu(pred, truth)
            for name, weights in BLEU_WEIGHTS.items():
                assert ours[name] == pytest.approx(sentence_bleu([truth], pred, weights=weights), rel=1e-12, abs=0)
