"""The bundled sample clinician preferences: one judgement per stand-in answer-pair question, labelled as written by
the maintainers, and joined to an answer-pairs dataset into `preferences` rows the selector reads."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset

from vital.data.sample import load_sample_pairs, sample_dir
from vital.data.sample_preferences import (
    SAMPLE_ANNOTATOR,
    SamplePreference,
    load_sample_preferences,
    read_sample_preferences,
    sample_preferences_sha256,
)
from vital.data.schemas import PREFERENCE_FEATURES, image_part, message_text, text_part, validate_dataset
from vital.generation import answer_pair_features, parse_answer_pairs
from vital.selector import load_clinician_pairs


@pytest.fixture(scope="module")
def replies():
    return json.loads((sample_dir() / "standin_responses.json").read_text(encoding="utf-8"))["answer_pairs"]


@pytest.fixture(scope="module")
def answer_pairs(replies):
    """What the generate stage pushes for the stand-in's answer pairs: one row per question, Answer 1 as answer_a."""
    pairs = {p["id"]: p for p in load_sample_pairs()}
    rows = []
    for pair_id, reply in replies.items():
        for i, (question, answer_a, answer_b) in enumerate(parse_answer_pairs(reply)):
            rows.append(
                {
                    "id": f"{pair_id}-ap0-q{i}",
                    "pair_id": pair_id,
                    "images": [pairs[pair_id]["image"]],
                    "prompt": [{"role": "user", "content": [image_part(), text_part(question)]}],
                    "answer_a": [{"role": "assistant", "content": [text_part(answer_a)]}],
                    "answer_b": [{"role": "assistant", "content": [text_part(answer_b)]}],
                    "modality": pairs[pair_id]["modality"],
                    "question": question,
                    "generation": None,
                }
            )
    return Dataset.from_list(rows, features=answer_pair_features())


def test_every_answer_pair_question_has_exactly_one_labelled_judgement(replies):
    judged = read_sample_preferences()
    questions = {(pid, q) for pid, reply in replies.items() for q, _, _ in parse_answer_pairs(reply)}
    assert {(p.pair_id, p.question) for p in judged} == questions and len(judged) == len(questions)
    assert {p.better for p in judged} == {"Answer 1", "Answer 2"}  # both positions win somewhere
    assert all(p.annotator == SAMPLE_ANNOTATOR and "not clinicians" in p.annotator for p in judged)
    assert all(len(p.note) > 20 for p in judged)
    about = json.loads((sample_dir() / "clinician_preferences.json").read_text(encoding="utf-8"))["about"]
    assert "NOT clinician judgements" in about
    assert len(sample_preferences_sha256()) == 64


def test_join_gives_preference_rows_with_the_better_answer_chosen(answer_pairs):
    prefs = load_sample_preferences(answer_pairs, weight=50.0)
    assert prefs.features == PREFERENCE_FEATURES and len(prefs) == len(answer_pairs)
    assert len(validate_dataset(prefs, "preferences")[0]) == len(prefs)
    assert set(prefs["source"]) == {"clinician"} and set(prefs["weight"]) == {50.0}
    assert set(prefs["annotator"]) == {SAMPLE_ANNOTATOR}
    by_id = {row["id"]: row for row in prefs}
    # Hand-checked: the wrong side for the aorta, a dense-bone explanation of bright marrow on T1.
    aorta = by_id["sample-ct-0001-ap0-q0"]
    assert message_text(aorta["chosen"][0]).startswith(
        "The aorta is the round soft-tissue structure at the upper right"
    )
    assert "patient's right" in message_text(aorta["rejected"][0])
    marrow = by_id["sample-mri-0002-ap0-q0"]
    assert message_text(marrow["chosen"][0]).startswith("Fatty marrow")
    assert message_text(marrow["rejected"][0]) == "Because the bone is dense."
    source = answer_pairs[answer_pairs["id"].index("sample-ct-0001-ap0-q0")]
    assert aorta["prompt"] == source["prompt"] and aorta["images"][0].size == source["images"][0].size


def test_unjudged_questions_are_left_out_and_matching_ignores_case_and_spacing(answer_pairs):
    row = dict(answer_pairs[0])
    shouty = {**row, "id": "x-0", "question": "  " + row["question"].upper().replace(" ", "   ") + " "}
    unknown = {**row, "id": "x-1", "question": "A question nobody judged?"}
    prefs = load_sample_preferences(Dataset.from_list([shouty, unknown], features=answer_pair_features()))
    assert prefs["id"] == ["x-0"]
    custom = [SamplePreference(row["pair_id"], row["question"], "Answer 2", "Dr Test", "why")]
    flipped = load_sample_preferences([row], preferences=custom)
    assert flipped[0]["chosen"] == row["answer_b"] and flipped[0]["annotator"] == "Dr Test"
    empty = load_sample_preferences([unknown])
    assert len(empty) == 0 and empty.features == PREFERENCE_FEATURES
    with pytest.raises(ValueError, match="weight"):
        load_sample_preferences([row], weight=0)


def test_the_selector_reads_them_like_an_annotation_app_export(answer_pairs):
    prefs = load_sample_preferences(answer_pairs)
    again = load_clinician_pairs(prefs, weight=7.0)
    assert len(again) == len(prefs) and set(again["weight"]) == {7.0}
    assert again["chosen"] == prefs["chosen"] and again["source"] == prefs["source"]
