"""VQA metrics: `legacy` behaves like LLaVA-Med's published metric (microsoft/LLaVA-Med `llava/eval/run_eval.py`),
flaws included; `strict` differs from it exactly where one of its flaws is fixed (docs/design.md, Evaluation
integrity), and nowhere else.

Every expected value below is worked out by hand from that script's rules; the comment on a row shows the working.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

import vital
from vital.evaluation.vqa_metrics import (
    legacy_closed_hit,
    legacy_exact_match,
    legacy_normalize,
    legacy_open_scores,
    score_vqa,
    strict_closed_answer,
    strict_closed_hit,
    strict_normalize,
    strict_open_recall,
)


METRICS_DIR = Path(vital.__file__).parent / "metrics"


# ---------------------------------------------------------------------------------------------------------------------
# normalisation


@dataclass(frozen=True)
class NormCase:
    name: str
    text: str
    legacy: str
    strict: str


NORM_CASES = [
    # "!" has a space after it in the original: deleted; "?" touches no space: spaced; the periods are deleted.
    NormCase("runs_of_punctuation", "No!!! ...?", "no", "no"),
    # "-" touches no space: spaced; "," has ", ": deleted; "(" has " (": deleted; ")" touches no space: spaced.
    NormCase("runs_of_mixed_marks", "right--sided ,, (ct)", "right sided ct", "right sided ct"),
    NormCase("hyphen_without_spaces", "x-ray", "x ray", "x ray"),
    NormCase("hyphen_with_spaces", "x - ray", "x ray", "x ray"),
    # One " -" anywhere makes every hyphen be deleted in legacy; strict decides each hyphen on its own.
    NormCase("hyphen_switch_from_elsewhere", "pre-op - x-ray", "preop xray", "pre op x ray"),
    # One digit-comma-digit anywhere deletes every mark in legacy (the global switch).
    NormCase("thousands_comma", "1,000 x-ray", "1000 xray", "1000 x ray"),
    NormCase("digit_comma_digit_far_away", "x-ray (size 2,5)", "xray size 25", "x ray size 25"),
    NormCase("decimal_period_kept", "3.5 cm.", "3.5 cm", "3.5 cm"),
    NormCase("leading_decimal_period_kept", "about .5 mm", "about .5 mm", "about .5 mm"),
    # 40 periods not followed by a digit: legacy deletes the first 32 only; strict has no cap.
    NormCase("more_than_32_periods", "yes" + "." * 40, "yes" + "." * 8, "yes"),
    NormCase("exactly_32_periods", "yes" + "." * 32, "yes", "yes"),
    # ", " present: commas deleted; none->0, ten->10, two->2, "the" dropped, "eleven" is not in the table.
    NormCase("number_words", "None of the ten, two or Eleven", "0 of 10 2 or eleven", "0 of 10 2 or eleven"),
    NormCase("articles", "A mass in an organ of THE chest", "mass in organ of chest", "mass in organ of chest"),
    # "? ", ", " and "; " all touch a space: deleted; then the contraction table.
    NormCase(
        "contractions",
        "Whats this? It isnt, I dont know; cant say",
        "what's this it isn't i don't know can't say",
        "what's this it isn't i don't know can't say",
    ),
    # The original table maps this one backwards; the table is shared, so strict keeps the quirk.
    NormCase("contraction_table_quirk", "somebody'd", "somebodyd", "somebodyd"),
    # The original table's "Im" key has a capital and never matches lower-cased text.
    NormCase("capitalised_table_keys_never_match", "Im sure", "im sure", "im sure"),
    NormCase("empty", "", "", ""),
    NormCase("whitespace_only", " \t\n ", "", ""),
    NormCase("articles_only", "the a an", "", ""),
    # ":" and "*" are not legacy marks; strict separates on every mark but the inner apostrophe.
    NormCase("colon_and_bold", "**Answer:** yes", "**answer:** yes", "answer yes"),
    NormCase("quoted_answer", "'yes'", "'yes'", "yes"),
]


@pytest.mark.parametrize("case", NORM_CASES, ids=lambda c: c.name)
def test_legacy_normalize(case):
    assert legacy_normalize(case.text) == case.legacy


@pytest.mark.parametrize("case", NORM_CASES, ids=lambda c: c.name)
def test_strict_normalize(case):
    assert strict_normalize(case.text) == case.strict


def test_legacy_normalize_is_not_idempotent_past_the_period_cap():
    """The cap is why the reference's double normalisation of open answers matters: the second pass removes more."""
    once = legacy_normalize("left lung" + "." * 70)
    assert once == "left lung" + "." * 38
    assert legacy_normalize(once) == "left lung" + "." * 6


# ---------------------------------------------------------------------------------------------------------------------
# closed questions


@dataclass(frozen=True)
class ClosedCase:
    name: str
    pred: str
    truth: str
    legacy: float
    strict: float
    unanswered: bool  # strict: no yes/no word in the prediction
    flaw: str | None  # the reference's flaw that makes the modes differ; None: they must agree


CLOSED_CASES = [
    ClosedCase("plain_yes", "Yes.", "yes", 1, 1, False, None),
    ClosedCase("no_in_a_sentence", "There is no pneumothorax.", "no", 1, 1, False, None),
    ClosedCase("bold_yes", "**Yes**, there is.", "yes", 1, 1, False, None),
    ClosedCase("colon_no", "Answer:no", "no", 1, 1, False, None),
    ClosedCase("wrong_answer", "yes", "no", 0, 0, False, None),
    # "there is effusion": neither "yes" nor "no" as a substring, so both modes miss.
    ClosedCase("no_yes_no_anywhere", "There is an effusion", "yes", 0, 0, True, None),
    ClosedCase("empty_prediction", "", "yes", 0, 0, True, None),
    # "nodule" contains "no": passes the gate and contains the truth.
    ClosedCase("no_vs_nodule", "nodule", "no", 1, 0, True, "substring"),
    # "eyes are normal" contains "yes" (in "eyes") and "no" (in "normal").
    ClosedCase("eyes_passes_gate_and_matches_yes", "The eyes are normal", "yes", 1, 0, True, "substring"),
    ClosedCase("normal_passes_gate_and_matches_no", "normal", "no", 1, 0, True, "substring"),
    ClosedCase("cannot_reads_as_no", "I cannot tell", "no", 1, 0, True, "substring"),
    # legacy: "no yes" contains "yes"; strict reads the first yes/no word: "no".
    ClosedCase("first_yes_no_word_decides", "No, yes", "yes", 1, 0, False, "substring"),
    # A closed answer that is not yes/no fails the legacy gate; strict matches it as words.
    ClosedCase("non_yes_no_truth", "left", "left", 0, 1, False, "substring"),
    # "normal" passes the legacy gate ("no") and contains the truth; strict finds the word.
    ClosedCase("non_yes_no_truth_through_gate", "normal", "normal", 1, 1, False, None),
    # An empty truth is a substring of everything.
    ClosedCase("empty_truth", "yes", "", 1, 0, False, "substring"),
]


@pytest.mark.parametrize("case", CLOSED_CASES, ids=lambda c: c.name)
def test_legacy_closed_hit(case):
    assert legacy_closed_hit(case.pred, case.truth) == bool(case.legacy)


@pytest.mark.parametrize("case", CLOSED_CASES, ids=lambda c: c.name)
def test_strict_closed_hit(case):
    assert strict_closed_hit(case.pred, case.truth) == bool(case.strict)
    if case.truth in ("yes", "no"):
        assert (strict_closed_answer(case.pred) is None) == case.unanswered


@pytest.mark.parametrize("case", CLOSED_CASES, ids=lambda c: c.name)
def test_closed_modes_differ_only_where_the_reference_names_a_flaw(case):
    assert (case.legacy != case.strict) == (case.flaw is not None)


# ---------------------------------------------------------------------------------------------------------------------
# open questions


@dataclass(frozen=True)
class OpenCase:
    name: str
    pred: str
    truth: str
    legacy: tuple[float, float, float]  # recall, precision, f1
    exact_match: float  # legacy: distinct truth words found / prediction words
    strict: float
    flaw: str | None


OPEN_CASES = [
    OpenCase("exact", "Left lung.", "left lung", (1, 1, 1), 1, 1, None),
    # tp counts the prediction's 3 "left"; fn = 1 ("lung"): recall 3/4, precision 3/3, F1 = 2*.75/1.75 = 6/7.
    OpenCase("repeated_words", "left left left", "left lung", (3 / 4, 1, 6 / 7), 1 / 3, 1 / 2, "multiplicity"),
    # tp 1 ("lung"), fp 1 ("right"), fn 1 ("left").
    OpenCase("partial", "right lung", "left lung", (1 / 2, 1 / 2, 1 / 2), 1 / 2, 1 / 2, None),
    # pred "mass is in left lung": tp 2, fp 3, fn 0; F1 = 2 * .4 / 1.4.
    OpenCase("extra_words", "The mass is in the left lung", "left lung", (1, 2 / 5, 4 / 7), 2 / 5, 1, None),
    OpenCase("number_words", "two lesions", "2 lesions", (1, 1, 1), 1, 1, None),
    OpenCase("articles", "the liver", "liver", (1, 1, 1), 1, 1, None),
    OpenCase("contractions", "it isnt", "it isn't", (1, 1, 1), 1, 1, None),
    OpenCase("decimal_period", "3.5 cm.", "3.5 cm", (1, 1, 1), 1, 1, None),
    # legacy: pred "1000 xray" (global switch) shares nothing with truth "x ray".
    OpenCase("thousands_switch", "1,000 x-ray", "x-ray", (0, 0, 0), 0, 1, "global switch"),
    # legacy: pred "preop xray" (" -" switches every hyphen to deletion) vs truth "x ray".
    OpenCase("hyphen_switch", "pre-op - x-ray", "x-ray", (0, 0, 0), 0, 1, "global switch"),
    # legacy twice: "left lung......" (70 - 32 - 32 periods): tp 1 ("left"), fp 1, fn 1 ("lung").
    OpenCase("period_cap", "left lung" + "." * 70, "left lung", (1 / 2, 1 / 2, 1 / 2), 1 / 2, 1, "period cap"),
    # 40 periods: the first pass leaves 8, the second removes them: the double normalisation hides the cap.
    OpenCase("period_cap_hidden_by_second_pass", "lung" + "." * 40, "lung", (1, 1, 1), 1, 1, None),
    OpenCase("empty_prediction", "", "left lung", (0, 0, 0), 0, 0, None),
    OpenCase("empty_truth", "left lung", "", (0, 0, 0), 0, 0, None),
    OpenCase("both_empty", "", "", (0, 0, 0), 0, 0, None),
    OpenCase("no_shared_word", "kidney", "liver", (0, 0, 0), 0, 0, None),
]


@pytest.mark.parametrize("case", OPEN_CASES, ids=lambda c: c.name)
def test_legacy_open_scores(case):
    assert legacy_open_scores(case.pred, case.truth) == pytest.approx(case.legacy)


@pytest.mark.parametrize("case", OPEN_CASES, ids=lambda c: c.name)
def test_legacy_exact_match_is_a_precision(case):
    assert legacy_exact_match(case.pred, case.truth) == pytest.approx(case.exact_match)


@pytest.mark.parametrize("case", OPEN_CASES, ids=lambda c: c.name)
def test_strict_open_recall(case):
    assert strict_open_recall(case.pred, case.truth) == pytest.approx(case.strict)


@pytest.mark.parametrize("case", OPEN_CASES, ids=lambda c: c.name)
def test_open_modes_differ_only_where_the_reference_names_a_flaw(case):
    assert (case.legacy[0] != pytest.approx(case.strict)) == (case.flaw is not None)


# ---------------------------------------------------------------------------------------------------------------------
# a whole split


def split_from_cases():
    preds = [c.pred for c in CLOSED_CASES] + [c.pred for c in OPEN_CASES]
    truths = [c.truth for c in CLOSED_CASES] + [c.truth for c in OPEN_CASES]
    types = ["CLOSED"] * len(CLOSED_CASES) + ["OPEN"] * len(OPEN_CASES)
    return preds, truths, types


def test_score_vqa_legacy_matches_the_item_functions():
    preds, truths, types = split_from_cases()
    out = score_vqa(preds, truths, types, mode="legacy")
    expected_items = [float(c.legacy) for c in CLOSED_CASES] + [c.legacy[0] for c in OPEN_CASES]
    assert out["item_scores"] == pytest.approx(expected_items)
    assert out["n_closed"] == len(CLOSED_CASES) and out["n_open"] == len(OPEN_CASES)
    assert out["closed_accuracy"] == pytest.approx(100 * sum(c.legacy for c in CLOSED_CASES) / len(CLOSED_CASES))
    assert out["open_recall"] == pytest.approx(100 * sum(c.legacy[0] for c in OPEN_CASES) / len(OPEN_CASES))
    assert out["open_precision"] == pytest.approx(100 * sum(c.legacy[1] for c in OPEN_CASES) / len(OPEN_CASES))
    assert out["open_f1"] == pytest.approx(100 * sum(c.legacy[2] for c in OPEN_CASES) / len(OPEN_CASES))
    assert out["open_exact_match"] == pytest.approx(100 * sum(c.exact_match for c in OPEN_CASES) / len(OPEN_CASES))
    assert out["mode"] == "legacy"


def test_score_vqa_strict_matches_the_item_functions():
    preds, truths, types = split_from_cases()
    out = score_vqa(preds, truths, types, mode="strict")
    expected_items = [float(c.strict) for c in CLOSED_CASES] + [c.strict for c in OPEN_CASES]
    assert out["item_scores"] == pytest.approx(expected_items)
    assert out["item_unanswered"] == [c.unanswered for c in CLOSED_CASES] + [False] * len(OPEN_CASES)
    assert out["n_closed_unanswered"] == sum(c.unanswered for c in CLOSED_CASES)
    assert out["closed_accuracy"] == pytest.approx(100 * sum(c.strict for c in CLOSED_CASES) / len(CLOSED_CASES))
    assert out["open_recall"] == pytest.approx(100 * sum(c.strict for c in OPEN_CASES) / len(OPEN_CASES))
    assert out["mode"] == "strict"


def test_score_vqa_repeated_strings_score_like_fresh_ones():
    """Normalisations are cached per call; a string seen before must give the same score as the first time."""
    preds = ["left left left", "left left left", "nodule", "nodule"]
    truths = ["left lung", "left lung", "no", "no"]
    out = score_vqa(preds, truths, ["OPEN", "open", "CLOSED", " closed "], mode="legacy")
    assert out["item_scores"] == pytest.approx([0.75, 0.75, 1.0, 1.0])


def test_score_vqa_split_without_open_items_reports_none():
    out = score_vqa(["yes"], ["yes"], ["CLOSED"], mode="strict")
    assert out["closed_accuracy"] == 100.0
    assert out["open_recall"] is None and out["n_open"] == 0


def test_score_vqa_empty_split():
    out = score_vqa([], [], [], mode="legacy")
    assert out["closed_accuracy"] is None and out["open_recall"] is None and out["item_scores"] == []


def test_score_vqa_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same length"):
        score_vqa(["yes", "no"], ["yes"], ["CLOSED", "CLOSED"])


def test_score_vqa_unknown_answer_type_is_an_error():
    with pytest.raises(ValueError, match="item 1: answer_type"):
        score_vqa(["yes", "no"], ["yes", "no"], ["CLOSED", "yes/no"])


def test_score_vqa_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="mode"):
        score_vqa(["yes"], ["yes"], ["CLOSED"], mode="lenient")


def test_score_vqa_non_string_prediction_is_an_error():
    with pytest.raises(TypeError, match="item 0: prediction"):
        score_vqa([None], ["yes"], ["CLOSED"])


# ---------------------------------------------------------------------------------------------------------------------
# the `evaluate` modules


@pytest.mark.parametrize("mode", ["legacy", "strict"])
def test_evaluate_module_loads_offline_and_matches_score_vqa(mode, tmp_path):
    import evaluate  # slow to import (datasets, pyarrow): only here

    assert os.environ.get("HF_HUB_OFFLINE") == "1" and os.environ.get("HF_EVALUATE_OFFLINE") == "1"
    metric = evaluate.load(str(METRICS_DIR / f"vqa_{mode}"), cache_dir=str(tmp_path), keep_in_memory=True)
    preds, truths, types = split_from_cases()
    out = metric.compute(predictions=preds, references=truths, answer_types=types)
    assert out == score_vqa(preds, truths, types, mode=mode)


def test_evaluate_modules_have_metric_cards():
    for mode in ("legacy", "strict"):
        card = (METRICS_DIR / f"vqa_{mode}" / "README.md").read_text()
        assert card.startswith("---\n") and "## How to use" in card
