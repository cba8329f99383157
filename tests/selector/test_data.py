"""Selector data: the scored text, the collator, judge pairs from ratings, clinician pairs from files."""

import csv
import json
import logging

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image

from vital.data.errors import RecordError
from vital.data.schemas import (
    CANDIDATE_FEATURES,
    image_part,
    text_part,
    validate_preference,
)
from vital.selector import (
    JUDGE_PAIR_FEATURES,
    SelectorCollator,
    build_judge_pairs,
    candidate_turn_text,
    compose_text,
    load_clinician_pairs,
    preference_side,
)


def _image(value: int) -> Image.Image:
    return Image.new("RGB", (32, 32), (value, value, value))


def _candidate(cid: str, n_turns: int = 2, shade: int = 100) -> dict:
    messages = []
    for t in range(n_turns):
        question = [text_part(f"{cid} question {t}?")]
        if t == 0:
            question.insert(0, image_part())
        messages.append({"role": "user", "content": question})
        messages.append({"role": "assistant", "content": [text_part(f"{cid} answer {t}.")]})
    return {
        "id": cid,
        "pair_id": f"pair-{cid}",
        "images": [_image(shade)],
        "messages": messages,
        "modality": "ct",
        "caption": f"Caption of {cid}.",
        "mentions": [f"{cid} is mentioned.", "Twice."],
        "generation": None,
    }


def _rating(cid: str, turn: int, score, judge: str = "judge-model") -> dict:
    return {
        "candidate_id": cid,
        "turn": turn,
        "score": score,
        "error": None if score is not None else "unparseable",
        "rationale": "",
        "judge": {"model": judge, "prompt_sha": "abc"},
    }


@pytest.fixture
def rated():
    """Twelve candidates of two turns; turn scores spread over 0-10, one unparseable rating."""
    candidates = [_candidate(f"c{i:02d}", shade=20 * i) for i in range(12)]
    ratings = [_rating(c["id"], t, float((3 * i + 5 * t) % 11)) for i, c in enumerate(candidates) for t in range(2)]
    ratings.append(_rating("c00", 1, None))
    ratings = [r for r in ratings if not (r["candidate_id"] == "c00" and r["turn"] == 1 and r["score"] is not None)]
    return ratings, candidates


# ---- the text to score ----------------------------------------------------------------------------------------------
def test_compose_text_joins_the_fields_in_order():
    values = {"question": "Q?", "answer": "A.", "caption": "C.", "mentions": ["m1.", "m2."]}
    assert compose_text(values, ["caption", "question", "answer"]) == "C.\nQ?\nA."
    assert compose_text(values, ["mentions"]) == "m1. m2."
    with pytest.raises(RecordError, match="'caption'"):
        compose_text({"question": "Q?"}, ["question", "caption"], record_id="r1")
    with pytest.raises(ValueError, match="unknown text field"):
        compose_text(values, ["rationale"])


def test_candidate_turn_text_takes_one_question_answer_pair():
    candidate = _candidate("c1")
    assert candidate_turn_text(candidate, 1, ["question", "answer"]) == "c1 question 1?\nc1 answer 1."
    assert candidate_turn_text(candidate, 0, ["caption", "answer"]) == "Caption of c1.\nc1 answer 0."
    with pytest.raises(RecordError, match="out of range"):
        candidate_turn_text(candidate, 2, ["answer"])


def _preference(i=0, chosen_image=None, rejected_image=None, source="model", weight=1.0):
    row = {
        "id": f"p{i}",
        "prompt": [{"role": "user", "content": [image_part(), text_part(f"shared question {i}")]}],
        "images": [chosen_image or _image(10)],
        "chosen": [{"role": "assistant", "content": [text_part(f"good answer {i}")]}],
        "rejected": [{"role": "assistant", "content": [text_part(f"bad answer {i}")]}],
        "source": source,
        "annotator": "a",
        "weight": weight,
    }
    if rejected_image is not None:
        row["rejected_images"] = [rejected_image]
        row["rejected_prompt"] = [{"role": "user", "content": [image_part(), text_part(f"other question {i}")]}]
    return row


def test_preference_side_reads_a_sides_own_columns_first():
    shared = _preference(0)
    assert preference_side(shared, "rejected", ["question", "answer"])[1] == "shared question 0\nbad answer 0"
    own = _preference(0, rejected_image=_image(200))
    image, text = preference_side(own, "rejected", ["question", "answer"])
    assert text == "other question 0\nbad answer 0"
    assert image.getpixel((0, 0)) == (200, 200, 200)
    assert preference_side(own, "chosen", ["question"])[1] == "shared question 0"


# ---- the collator -----------------------------------------------------------------------------------------------------
def test_collator_puts_chosen_rows_first_then_rejected(processor):
    rows = [
        _preference(0, chosen_image=_image(0)),
        _preference(1, chosen_image=_image(250), source="clinician", weight=5.0),
    ]
    batch = SelectorCollator(processor, text_fields=["question", "answer"])(rows)
    assert batch["input_ids"].shape[0] == 4
    assert batch["pixel_values"].shape[0] == 4
    decoded = processor.tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
    assert [d.split("\n")[-1] for d in decoded] == ["good answer 0", "good answer 1", "bad answer 0", "bad answer 1"]
    # One shared image per row: the pixel values repeat for the rejected half.
    torch.testing.assert_close(batch["pixel_values"][:2], batch["pixel_values"][2:])
    assert not torch.equal(batch["pixel_values"][0], batch["pixel_values"][1])
    torch.testing.assert_close(batch["weights"], torch.tensor([1.0, 5.0]))
    torch.testing.assert_close(batch["sources"], torch.tensor([0.0, 1.0]))


def test_collator_uses_each_sides_image_when_the_row_has_one(processor):
    batch = SelectorCollator(processor)([_preference(0, chosen_image=_image(0), rejected_image=_image(250))])
    assert batch["pixel_values"][0].mean() < batch["pixel_values"][1].mean()


def test_collator_truncates_to_max_length(processor):
    row = _preference(0)
    row["chosen"] = [{"role": "assistant", "content": [text_part("word " * 200)]}]
    batch = SelectorCollator(processor, max_length=12)([row])
    assert batch["input_ids"].shape[1] == 12


# ---- judge pairs --------------------------------------------------------------------------------------------------------
def test_judge_pairs_come_from_different_score_levels(rated):
    ratings, candidates = rated
    splits = build_judge_pairs(ratings, candidates, n_train=30, n_heldout=8, min_gap=3, seed=0, heldout_fraction=1 / 3)
    assert set(splits) == {"train", "heldout"}
    assert (len(splits["train"]), len(splits["heldout"])) == (30, 8)
    assert splits["train"].features == JUDGE_PAIR_FEATURES
    scores = {(r["candidate_id"], r["turn"]): r["score"] for r in ratings if r["score"] is not None}
    for split in splits.values():
        ids = set()
        for row in split:
            chosen = (row["chosen_id"], row["chosen_turn"])
            rejected = (row["rejected_id"], row["rejected_turn"])
            assert row["chosen_score"] == scores[chosen] and row["rejected_score"] == scores[rejected]
            assert row["chosen_score"] - row["rejected_score"] >= 3
            assert (row["source"], row["weight"], row["annotator"]) == ("model", 1.0, "judge-model")
            assert ("c00", 1) not in (chosen, rejected)  # the unscored turn is left out
            ids.add(row["id"])
            validate_preference(row)
        assert len(ids) == len(split)  # no pair twice


def test_judge_pair_rows_carry_each_sides_turn(rated, processor):
    ratings, candidates = rated
    row = build_judge_pairs(ratings, candidates, n_train=5, n_heldout=0, min_gap=2, seed=1)["train"][0]
    for side in ("chosen", "rejected"):
        cid, turn = row[f"{side}_id"], row[f"{side}_turn"]
        shade = 20 * int(cid[1:])
        _, text = preference_side(row, side, ["question", "answer"])
        assert text == f"{cid} question {turn}?\n{cid} answer {turn}."
        assert row[f"{side}_images"][0].getpixel((0, 0)) == (shade, shade, shade)
        assert row[f"{side}_caption"] == f"Caption of {cid}."
    assert row["prompt"] == row["chosen_prompt"]
    batch = SelectorCollator(processor)([row])
    assert batch["input_ids"].shape[0] == 2


def test_no_candidate_sits_on_both_sides_of_the_split(rated):
    ratings, candidates = rated
    splits = build_judge_pairs(ratings, candidates, n_train=40, n_heldout=15, min_gap=1, seed=3)
    train = set(splits["train"]["chosen_id"]) | set(splits["train"]["rejected_id"])
    heldout = set(splits["heldout"]["chosen_id"]) | set(splits["heldout"]["rejected_id"])
    assert train and heldout
    assert not train & heldout


def test_judge_pairs_are_deterministic_and_ignore_input_order(rated):
    ratings, candidates = rated
    first = build_judge_pairs(ratings, candidates, n_train=20, n_heldout=5, min_gap=2, seed=7)
    rng = np.random.default_rng(0)
    shuffled = build_judge_pairs(
        [ratings[i] for i in rng.permutation(len(ratings))],
        Dataset.from_list([candidates[i] for i in rng.permutation(len(candidates))], features=CANDIDATE_FEATURES),
        n_train=20,
        n_heldout=5,
        min_gap=2,
        seed=7,
    )
    for split in ("train", "heldout"):
        assert first[split]["id"] == shuffled[split]["id"]
    other = build_judge_pairs(ratings, candidates, n_train=20, n_heldout=5, min_gap=2, seed=8)
    assert other["train"]["id"] != first["train"]["id"]


def test_too_few_valid_pairs_gives_all_of_them_with_a_warning(caplog):
    candidates = [_candidate("a", 1), _candidate("b", 1), _candidate("c", 1)]
    ratings = [_rating("a", 0, 9.0), _rating("b", 0, 2.0), _rating("c", 0, 8.0)]
    with caplog.at_level(logging.WARNING, logger="vital.selector.data"):
        pairs = build_judge_pairs(ratings, candidates, n_train=10, n_heldout=0, min_gap=5, seed=0)["train"]
    assert sorted(pairs["id"]) == ["a#0>b#0", "c#0>b#0"]
    assert "only 2 train pair(s)" in caplog.text


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (_rating("zz", 0, 5.0), "candidate_id"),  # unknown candidate
        (_rating("c01", 5, 5.0), "turn"),  # no such turn
        (_rating("c01", 0, 5.0), "turn"),  # rated twice
        (_rating("c01", 0, 11.0), "score"),  # out of range
    ],
)
def test_bad_ratings_name_the_record_and_field(rated, bad, field):
    ratings, candidates = rated
    with pytest.raises(RecordError) as info:
        build_judge_pairs([*ratings, bad], candidates, n_train=5, n_heldout=1, min_gap=2)
    assert info.value.field == field
    assert info.value.record_id == bad["candidate_id"]


# ---- clinician pairs ----------------------------------------------------------------------------------------------------
@pytest.fixture
def image_file(tmp_path):
    (tmp_path / "figs").mkdir()
    _image(128).save(tmp_path / "figs" / "fig1.png")
    return "figs/fig1.png"


def _flat(i, image, **overrides):
    row = {
        "id": f"q{i}",
        "question": f"What is shown {i}?",
        "chosen": f"A careful answer {i}.",
        "rejected": f"A sloppy answer {i}.",
        "image": image,
        "annotator": "dr-a",
    }
    row.update(overrides)
    return row


def test_clinician_pairs_load_from_json_and_csv(tmp_path, image_file):
    rows = [_flat(0, image_file), _flat(1, image_file, annotator="dr-b")]
    (tmp_path / "prefs.json").write_text(json.dumps(rows))
    with (tmp_path / "prefs.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for name in ("prefs.json", "prefs.csv"):
        pairs = load_clinician_pairs(tmp_path / name, weight=10.0)
        assert len(pairs) == 2
        row = pairs[1]
        assert (row["id"], row["source"], row["annotator"], row["weight"]) == ("q1", "clinician", "dr-b", 10.0)
        assert row["prompt"][0]["content"][1]["text"] == "What is shown 1?"
        assert row["chosen"][0]["content"][0]["text"] == "A careful answer 1."
        assert row["images"][0].getpixel((0, 0)) == (128, 128, 128)  # embedded, not a path
        validate_preference(row)


def test_clinician_rows_in_the_preference_schema_pass_through(image_file, tmp_path):
    row = _preference(3)
    row["images"] = [str(tmp_path / image_file)]
    pairs = load_clinician_pairs([row], weight=2.0)
    assert (pairs[0]["source"], pairs[0]["weight"]) == ("clinician", 2.0)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"chosen": ""}, "chosen"),
        ({"question": "  "}, "question"),
        ({"rejected": "A careful answer 1."}, "rejected"),  # the same as chosen
        ({"image": "figs/missing.png"}, "image"),
        ({"annotator": None}, "annotator"),
    ],
)
def test_bad_clinician_rows_name_the_row_and_field(tmp_path, image_file, overrides, field):
    rows = [_flat(0, image_file), {**_flat(1, image_file), **overrides}]
    with pytest.raises(RecordError) as info:
        load_clinician_pairs(rows, weight=1.0, image_root=tmp_path)
    assert (info.value.record_id, info.value.field) == ("q1", field)


def test_clinician_rows_without_id_are_named_by_position(tmp_path, image_file):
    row = _flat(0, image_file)
    del row["id"], row["chosen"]
    with pytest.raises(RecordError, match="record 'row 0', field 'chosen'"):
        load_clinician_pairs([row], image_root=tmp_path)
