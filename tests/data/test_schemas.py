"""The data contracts: every bad row is named by record id and field, or quarantined with its reason and counted."""

import io

import numpy as np
import pytest
from datasets import Dataset
from PIL import Image as PILImage

from vital.data.errors import Quarantine, RecordError
from vital.data.schemas import (
    CANDIDATE_FEATURES,
    PAIR_FEATURES,
    PREFERENCE_FEATURES,
    RATING_FEATURES,
    check_columns,
    image_part,
    qa_turns,
    text_part,
    validate_dataset,
    validate_messages,
    validate_preference,
    validate_rating,
)


def png_bytes(value=0):
    buf = io.BytesIO()
    PILImage.fromarray(np.full((6, 6, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def conversation(n_turns=2, image=True):
    messages = []
    for i in range(n_turns):
        content = [text_part(f"question {i}")]
        if i == 0 and image:
            content.insert(0, image_part())
        messages += [
            {"role": "user", "content": content},
            {"role": "assistant", "content": [text_part(f"answer {i}")]},
        ]
    return messages


GENERATION = {
    "model": "m",
    "endpoint": "stand-in",
    "prompt_sha": "abc",
    "demo_ids": ["d1"],
    "prompt_tokens": 10,
    "completion_tokens": 20,
    "cost_usd": 0.0,
    "stand_in": True,
}


def candidate(cid="c1", **overrides):
    row = {
        "id": cid,
        "pair_id": "p1",
        "images": [{"bytes": png_bytes(), "path": None}],
        "messages": conversation(),
        "modality": "ct",
        "caption": "Axial CT.",
        "mentions": ["As shown in Figure 1."],
        "generation": GENERATION,
    }
    return {**row, **overrides}


def pair(pid="p1", **overrides):
    row = {
        "id": pid,
        "image": {"bytes": png_bytes(), "path": None},
        "caption": "Axial CT.",
        "fig_label": "Figure 1",
        "mentions": ["Figure 1 shows ..."],
        "modality": "ct",
        "source": {"origin": "test", "pmid": "", "url": "", "license": "CC0", "citation": ""},
    }
    return {**row, **overrides}


# ----------------------------------------------------------------------------------------------------------------------
def test_good_rows_pass_and_round_trip_through_features():
    ds = Dataset.from_list([candidate("c1"), candidate("c2")], features=CANDIDATE_FEATURES)
    kept, quarantine = validate_dataset(ds, "candidates")
    assert len(kept) == 2 and len(quarantine) == 0
    assert kept[0]["messages"][0]["content"][0] == {"type": "image", "text": None}
    assert qa_turns(kept[0]["messages"]) == [("question 0", "answer 0"), ("question 1", "answer 1")]


@pytest.mark.parametrize(
    ("messages", "field", "reason"),
    [
        ([], "messages", "non-empty list"),
        ("hello", "messages", "non-empty list"),
        ([{"role": "bot", "content": [text_part("x")]}], "messages[0].role", "unknown role 'bot'"),
        ([{"role": "user", "content": "plain"}], "messages[0].content", "list of content parts"),
        ([{"role": "user", "content": [{"type": "video"}]}], "messages[0].content[0]", "'text' or 'image'"),
        (
            [{"role": "user", "content": [{"type": "text", "text": 3}]}],
            "messages[0].content[0].text",
            "without a string",
        ),
        (
            [{"role": "user", "content": [text_part("q")]}, {"role": "assistant", "content": [text_part("  ")]}],
            "messages[1].content",
            "empty assistant turn",
        ),
        (
            [{"role": "assistant", "content": [text_part("a")]}],
            "messages",
            "must start with a user turn",
        ),
        (
            [{"role": "user", "content": [text_part("q")]}],
            "messages",
            "must end with an assistant turn",
        ),
        (
            [
                {"role": "user", "content": [text_part("q")]},
                {"role": "user", "content": [text_part("q2")]},
                {"role": "assistant", "content": [text_part("a")]},
            ],
            "messages[1].role",
            "turns out of order",
        ),
    ],
)
def test_bad_messages_name_record_and_field(messages, field, reason):
    with pytest.raises(RecordError) as err:
        validate_messages(messages, "rec-7")
    assert err.value.record_id == "rec-7" and err.value.field == field
    assert reason in str(err.value) and "rec-7" in str(err.value) and field in str(err.value)


def test_image_placeholders_must_match_images():
    with pytest.raises(RecordError, match=r"record 'c9', field 'messages': 1 image placeholder\(s\) for 2 image"):
        validate_messages(conversation(), "c9", n_images=2)
    later = conversation()
    later[2]["content"].insert(0, image_part())  # an image in the second user turn only
    later[0]["content"].pop(0)
    with pytest.raises(RecordError, match="first user turn"):
        validate_messages(later, "c9", n_images=1)


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        (candidate("bad", images=[]), "images", "non-empty list of images"),
        (candidate("bad", images=[{"bytes": b"not an image", "path": None}]), "images[0]", "corrupt image"),
        (candidate("bad", images=[{"bytes": None, "path": "/no/such/file.png"}]), "images[0]", "not found"),
        (candidate("bad", modality="xray"), "modality", "unknown modality"),
        (candidate("bad", pair_id=""), "pair_id", "empty string"),
        (candidate("bad", messages=conversation(image=False)), "messages", "0 image placeholder(s) for 1 image"),
    ],
)
def test_bad_candidates_raise_with_record_and_field(row, field, reason):
    ds = Dataset.from_list([candidate("ok"), row], features=CANDIDATE_FEATURES)
    with pytest.raises(RecordError) as err:
        validate_dataset(ds, "candidates")
    assert (err.value.record_id, err.value.field) == ("bad", field)
    assert reason in err.value.reason


def test_skip_mode_quarantines_and_counts():
    rows = [
        candidate("ok1"),
        candidate("bad1", images=[{"bytes": b"garbage", "path": None}]),
        candidate("ok2"),
        candidate("bad2", modality="xray"),
        candidate("bad3", images=[{"bytes": b"more garbage", "path": None}]),
    ]
    ds = Dataset.from_list(rows, features=CANDIDATE_FEATURES)
    kept, quarantine = validate_dataset(ds, "candidates", errors="skip")
    assert kept["id"] == ["ok1", "ok2"]
    assert quarantine.counts() == {"images[0]": 2, "modality": 1}
    failures = quarantine.to_dataset()
    assert failures["record_id"] == ["bad1", "bad2", "bad3"]
    assert all(failures["reason"]) and '"id": "bad2"' in failures["record"][1]
    assert "<" in failures["record"][0] and "garbage" not in failures["record"][0]  # bytes summarised, not dumped


def test_pairs_contract():
    ds = Dataset.from_list([pair("p1")], features=PAIR_FEATURES).remove_columns("mentions")
    ds = ds.add_column("mentions", ["not a list"])
    with pytest.raises(RecordError, match=r"field 'mentions': column type"):  # mentions typed as a string column
        validate_dataset(ds, "pairs")
    ds = Dataset.from_list([pair("p1"), pair("p2", caption="")], features=PAIR_FEATURES)
    with pytest.raises(RecordError, match=r"record 'p2', field 'caption': empty string"):
        validate_dataset(ds, "pairs")


def test_missing_column_is_named():
    ds = Dataset.from_list([pair("p1")], features=PAIR_FEATURES).remove_columns("caption")
    with pytest.raises(RecordError, match=r"field 'caption': column missing from the pairs dataset"):
        check_columns(ds, "pairs")


def test_ratings_contract():
    ok = {"candidate_id": "c1", "turn": 0, "score": 7.5, "error": None, "rationale": "r", "judge": {}}
    validate_rating(ok)
    validate_rating({**ok, "score": None, "error": "unparseable reply"})
    with pytest.raises(RecordError, match=r"field 'error': a null score must carry the error"):
        validate_rating({**ok, "score": None})
    with pytest.raises(RecordError, match=r"field 'score'"):
        validate_rating({**ok, "score": 11})
    with pytest.raises(RecordError, match=r"field 'turn'"):
        validate_rating({**ok, "turn": -1})
    ds = Dataset.from_list([ok], features=RATING_FEATURES)
    assert len(validate_dataset(ds, "ratings")[0]) == 1


def test_preferences_contract():
    row = {
        "id": "pref-1",
        "prompt": [{"role": "user", "content": [image_part(), text_part("q")]}],
        "images": [{"bytes": png_bytes(), "path": None}],
        "chosen": [{"role": "assistant", "content": [text_part("good")]}],
        "rejected": [{"role": "assistant", "content": [text_part("bad")]}],
        "source": "clinician",
        "annotator": "dr-a",
        "weight": 100.0,
    }
    ds = Dataset.from_list([row], features=PREFERENCE_FEATURES)
    assert len(validate_dataset(ds, "preferences")[0]) == 1
    with pytest.raises(RecordError, match=r"field 'source'"):
        validate_preference({**row, "source": "crowd"})
    with pytest.raises(RecordError, match=r"field 'weight'"):
        validate_preference({**row, "weight": 0})
    with pytest.raises(RecordError, match=r"field 'chosen': must hold assistant messages only"):
        validate_preference({**row, "chosen": row["prompt"]})


def test_quarantine_mode_is_checked():
    with pytest.raises(ValueError, match="'raise' or 'skip'"):
        Quarantine("ignore")


def test_a_reason_is_the_same_on_every_run_without_object_addresses():
    """PIL names an undecodable in-memory image by its repr ("<_io.BytesIO object at 0x...>"): RecordError leaves
    such reprs out, so the same bad record gives the same reason and quarantine row in every run and process."""
    from vital.data.schemas import validate_image

    reasons = set()
    for _ in range(3):
        with pytest.raises(RecordError) as caught:
            validate_image({"bytes": b"not an image", "path": None}, "r1")
        reasons.add(caught.value.reason)
    (reason,) = reasons
    assert reason.startswith("corrupt image (UnidentifiedImageError: cannot identify image file")
    assert "0x" not in reason and "0x" not in str(caught.value)
    assert RecordError("r2", "image", "kept <as written> at 0xbeef, no repr").reason.endswith("at 0xbeef, no repr")
