"""Tests of the LLaVA-Med pairs and LLaVA instruction converters: round trips, images, and every bad-record path."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from datasets import Image, List
from PIL import Image as PILImage

from vital.data.errors import RecordError
from vital.data.llava import (
    IMAGE_TOKEN,
    LLAVA_MESSAGE_FEATURES,
    ConversionResult,
    conversations_to_messages,
    join_parts,
    llava_med_record_to_pair,
    llava_med_records_to_pairs,
    llava_record_to_row,
    llava_to_messages,
    messages_to_conversations,
    messages_to_llava,
    modality_from_domain,
    pairs_to_llava_med_records,
    row_to_llava,
    split_placeholders,
)
from vital.data.schemas import MESSAGES, check_columns, validate_dataset


DOMAIN_CT = {"chest_xray": False, "mri": False, "ct_scan": True, "histology": False, "gross": False}
DOMAIN_NONE = dict.fromkeys(DOMAIN_CT, False)


@pytest.fixture
def image_dir(tmp_path):
    """A folder with a JPEG, a PNG (RGBA), a garbage ``.jpg`` and a truncated JPEG."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    PILImage.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(folder / "a.jpg", quality=90)
    PILImage.fromarray(rng.integers(0, 255, (10, 12, 4), dtype=np.uint8)).save(folder / "b.png")
    PILImage.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / "PMC1_F1.jpg")
    (folder / "garbage.jpg").write_bytes(b"this is not an image \x00\x01\x02" * 10)
    (folder / "truncated.jpg").write_bytes((folder / "a.jpg").read_bytes()[:300])
    (folder / "empty.jpg").write_bytes(b"")
    return folder


def _conv(*turns):
    speakers = {"h": "human", "g": "gpt", "s": "system"}
    return [{"from": speakers[who], "value": value} for who, value in turns]


def llava_records():
    """Records covering the placeholder positions and the string shapes that must round-trip byte for byte."""
    return [
        {
            "id": "prefix",
            "image": "a.jpg",
            "domain": DOMAIN_CT,
            "conversations": _conv(("h", "<image>\nWhat is shown?"), ("g", "An axial CT slice.")),
        },
        {
            "id": "suffix",
            "image": "b.png",
            "conversations": _conv(
                ("h", "Describe the finding.  \n<image>"),
                ("g", "Line one.\nLine two with trailing spaces.   \n\n- bullet"),
                ("h", "Ünïcödé: µm, α-SMA, 肺, 🫁?"),
                ("g", "  leading spaces and a trailing newline\n"),
            ),
        },
        {
            "id": "system-and-middle",
            "image": "a.jpg",
            "domain": {"chest_xray": True, "mri": True},  # a partial domain keeps its key set
            "conversations": _conv(
                ("s", "You are a radiologist."),
                ("h", "Look at this\n\n<image>\n\nand say what you see"),
                ("g", "A nodule."),
            ),
        },
        {"id": "bare", "image": "a.jpg", "conversations": _conv(("h", "<image>"), ("g", "ok"))},
        {"id": "newline-only", "image": "a.jpg", "conversations": _conv(("h", "<image>\n"), ("g", "ok"))},
        {"id": "lead-newline", "image": "a.jpg", "conversations": _conv(("h", "\n<image>"), ("g", "ok"))},
        {
            "id": "text-only",
            "domain": DOMAIN_NONE,
            "conversations": _conv(("h", ""), ("g", "An answer to an empty question.")),
        },
        {
            "id": 42,  # an integer id comes back as an integer
            "image": "a.jpg",
            "source": "biomed-vital",
            "meta": {"round": 2, "scores": [1.5, None]},
            "conversations": _conv(("h", "<image>\n\n\nthree newlines"), ("g", "\t tab")),
        },
    ]


# --------------------------------------------------------------------------------------------------------------------
# B. LLaVA instruction records <-> messages
# --------------------------------------------------------------------------------------------------------------------
def test_llava_round_trip_is_exact(image_dir, tmp_path):
    records = llava_records()
    result = llava_to_messages(copy.deepcopy(records), image_dir)
    assert isinstance(result, ConversionResult)
    dataset, quarantine = result
    assert len(quarantine) == 0
    assert len(dataset) == len(records)
    assert dataset.features == LLAVA_MESSAGE_FEATURES
    assert dataset.features["messages"] == MESSAGES
    assert dataset.features["images"] == List(Image())

    back = messages_to_llava(dataset)
    assert back == records
    assert [set(r) for r in back] == [set(r) for r in records]
    assert isinstance(back[-1]["id"], int)
    # the same from a list of rows, and with images written back byte for byte
    out = tmp_path / "out"
    assert messages_to_llava(list(dataset)) == records
    assert messages_to_llava(dataset, image_dir=out) == records
    for name in ("a.jpg", "b.png"):
        assert (out / name).read_bytes() == (image_dir / name).read_bytes()


def test_llava_messages_layout(image_dir):
    dataset = llava_to_messages(llava_records(), image_dir).dataset
    by_id = {row["id"]: row for row in dataset}
    assert by_id["prefix"]["messages"] == [
        {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "What is shown?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "An axial CT slice."}]},
    ]
    assert by_id["suffix"]["messages"][0]["content"] == [
        {"type": "text", "text": "Describe the finding.  "},
        {"type": "image", "text": None},
    ]
    middle = by_id["system-and-middle"]["messages"]
    assert middle[0] == {"role": "system", "content": [{"type": "text", "text": "You are a radiologist."}]}
    assert [p["text"] for p in middle[1]["content"]] == ["Look at this\n", None, "\nand say what you see"]
    assert by_id["bare"]["messages"][0]["content"] == [{"type": "image", "text": None}]
    assert by_id["text-only"]["images"] == []
    assert by_id["text-only"]["image_file"] is None
    assert by_id["text-only"]["messages"][0]["content"] == [{"type": "text", "text": ""}]
    assert by_id["42"]["extra"] and json.loads(by_id["42"]["extra"]) == {
        "id": 42,
        "source": "biomed-vital",
        "meta": {"round": 2, "scores": [1.5, None]},
    }
    # domain: kept, null when absent; modality from the first true flag, "other" otherwise
    assert by_id["prefix"]["modality"] == "ct"
    assert by_id["system-and-middle"]["modality"] == "chest_xray"
    assert by_id["suffix"]["domain"] is None and by_id["suffix"]["modality"] == "other"
    assert by_id["text-only"]["modality"] == "other"


def test_modality_order():
    assert modality_from_domain(None) == "other"
    assert modality_from_domain(DOMAIN_NONE) == "other"
    assert modality_from_domain({**DOMAIN_NONE, "gross": True, "mri": True}) == "mri"
    assert modality_from_domain({**DOMAIN_NONE, "histology": True, "ct_scan": True}) == "ct"
    assert modality_from_domain({**DOMAIN_NONE, "gross": True}) == "gross"


@pytest.mark.parametrize(
    ("value", "normalised"),
    [
        ("<image>What is this?", "<image>\nWhat is this?"),
        ("What is this?<image>", "What is this?\n<image>"),
        ("See<image>here", "See\n<image>\nhere"),
        ("See\n<image>here", "See\n<image>\nhere"),
        (" <image> ", " \n<image>\n "),  # a space is not a separator
        ("A\r\n<image>\r\nB", "A\r\n<image>\n\r\nB"),  # nor is "\r\n" after the placeholder
    ],
)
def test_glued_placeholder_is_normalised_with_a_newline(image_dir, value, normalised):
    record = {"id": "g", "image": "a.jpg", "conversations": _conv(("h", value), ("g", "ok"))}
    back = messages_to_llava(llava_to_messages([record], image_dir).dataset)
    assert back[0]["conversations"][0]["value"] == normalised
    # ... and the normalised form is a fixed point
    again = messages_to_llava(llava_to_messages(back, image_dir).dataset)
    assert again == back


@pytest.mark.parametrize(
    "value",
    [
        "<image>\nQ",
        "Q\n<image>",
        "<image>",
        "<image>\n",
        "\n<image>",
        "\n\n<image>\n\n",
        "a\n<image>\nb",
        "a\n\n<image>\n\nb",
        " \n<image>\n  ",
        "x\r\n<image>\n\r\ny",
        "plain text, no placeholder\n",
        "",
    ],
)
def test_split_and_join_are_inverse(value):
    assert join_parts(split_placeholders(value)) == value


def test_images_are_embedded_with_identical_pixels(image_dir):
    dataset = llava_to_messages(llava_records()[:2], image_dir).dataset
    raw = dataset.cast_column("images", List(Image(decode=False)))
    for row, name in zip(raw, ("a.jpg", "b.png")):
        cell = row["images"][0]
        assert cell["bytes"] == (image_dir / name).read_bytes()
        assert cell["path"] == name  # the file name, not a path only this machine knows
    for row, name in zip(dataset, ("a.jpg", "b.png")):
        with PILImage.open(image_dir / name) as source:
            assert np.array_equal(np.asarray(row["images"][0]), np.asarray(source))


def test_llava_input_from_json_and_jsonl(image_dir, tmp_path):
    records = llava_records()
    json_path = tmp_path / "data.json"
    json_path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    jsonl_path = tmp_path / "data.jsonl"
    jsonl_path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    for path in (json_path, str(jsonl_path)):
        assert messages_to_llava(llava_to_messages(path, image_dir).dataset) == records


def test_bad_jsonl_line_is_quarantined(image_dir, tmp_path):
    path = tmp_path / "data.jsonl"
    good = llava_records()[0]
    path.write_text(json.dumps(good) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(RecordError, match="line 2") as info:
        llava_to_messages(path, image_dir)
    assert info.value.field == "record"
    dataset, quarantine = llava_to_messages(path, image_dir, errors="skip")
    assert dataset["id"] == ["prefix"]
    assert quarantine.counts() == {"record": 1}


def test_per_record_function_and_rows_from_other_stages(image_dir, tmp_path):
    record = llava_records()[0]
    row = llava_record_to_row(record, image_dir)
    assert row["id"] == "prefix" and row["image_file"] == "a.jpg"
    assert row["images"][0]["bytes"] == (image_dir / "a.jpg").read_bytes()
    assert row_to_llava(row) == record
    # a row from another stage (no image_file / domain / extra, decoded PIL image): named f"{id}.png"
    with PILImage.open(image_dir / "a.jpg") as im:
        pil = im.copy()
    other = {"id": "cand-1", "images": [pil], "messages": row["messages"]}
    out = tmp_path / "out"
    back = messages_to_llava([other], image_dir=out)
    assert back == [{"id": "cand-1", "image": "cand-1.png", "conversations": record["conversations"]}]
    with PILImage.open(out / "cand-1.png") as written:
        assert written.format == "PNG"
        assert np.array_equal(np.asarray(written), np.asarray(pil))


def test_message_helpers():
    conversations = _conv(("h", "<image>\nQ"), ("g", "A"))
    messages = conversations_to_messages(conversations, "r", n_images=1)
    assert messages_to_conversations(messages, "r") == conversations
    assert messages_to_conversations([{"role": "user", "content": "plain"}], "r") == [
        {"from": "human", "value": "plain"}
    ]
    with pytest.raises(RecordError) as info:
        messages_to_conversations([{"role": "tool", "content": []}], "r")
    assert info.value.field == "messages[0].role"
    with pytest.raises(RecordError) as info:
        row_to_llava({"id": "r", "images": [], "messages": messages})
    assert info.value.field == "messages"


def _with(**changes):
    """The first sample record with top-level keys changed (None deletes the key)."""
    record = copy.deepcopy(llava_records()[0])
    for key, value in changes.items():
        if value is None:
            record.pop(key, None)
        else:
            record[key] = value
    return record


def _turns(*turns, **changes):
    return _with(conversations=_conv(*turns), **changes)


BAD_LLAVA = [
    # (case, record, record id named, field named, words in the reason)
    ("missing id", _with(id=None), "#0", "id", "missing"),
    ("missing conversations", _with(conversations=None), "prefix", "conversations", "missing"),
    ("missing image", _with(image=None), "prefix", "image", "missing"),
    ("conversations not a list", _with(conversations="<image>\nhi"), "prefix", "conversations", "wrong type"),
    ("empty conversations", _with(conversations=[]), "prefix", "conversations", "empty"),
    ("value not a string", _turns(("h", "<image>\nQ"), ("g", 3)), "prefix", "conversations[1].value", "wrong type"),
    ("turn not an object", _with(conversations=["<image>\nQ", "A"]), "prefix", "conversations[0]", "wrong type"),
    ("missing speaker", _with(conversations=[{"value": "<image>"}]), "prefix", "conversations[0].from", "missing"),
    ("unknown speaker", _with(conversations=_conv(("h", "<image>\nQ"), ("g", "A")) + [{"from": "user", "value": "Q"}]),
     "prefix", "conversations[2].from", "unknown speaker 'user'"),
    ("two human turns", _turns(("h", "<image>\nQ"), ("h", "Q2"), ("g", "A")), "prefix", "conversations[1].from",
     "turns out of order"),
    ("starts with gpt", _turns(("g", "A"), ("h", "<image>\nQ")), "prefix", "conversations[0].from",
     "turns out of order"),
    ("ends with human", _turns(("h", "<image>\nQ"), ("g", "A"), ("h", "Q2")), "prefix", "conversations",
     "turns out of order"),
    ("late system turn", _turns(("h", "<image>\nQ"), ("s", "sys"), ("g", "A")), "prefix", "conversations[1].from",
     "turns out of order"),
    ("placeholder in two turns", _turns(("h", "<image>\nQ"), ("g", "A"), ("h", "<image>\nQ2"), ("g", "A2")),
     "prefix", "conversations", "2 <image> placeholder(s)"),
    ("two placeholders in one turn", _turns(("h", "<image>\n<image>\nQ"), ("g", "A")), "prefix", "conversations",
     "2 <image> placeholder(s)"),
    ("placeholder in a gpt turn", _turns(("h", "<image>\nQ"), ("g", "see <image>")), "prefix",
     "conversations[1].value", "'gpt' turn"),
    ("placeholder not in the first human turn", _turns(("h", "Q"), ("g", "A"), ("h", "<image>\nQ2"), ("g", "A2")),
     "prefix", "conversations[2].value", "first human turn"),
    ("missing image file", _with(image="nope.jpg"), "prefix", "image", "not found"),
    ("corrupt image file", _with(image="garbage.jpg"), "prefix", "image", "corrupt"),
    ("truncated image file", _with(image="truncated.jpg"), "prefix", "image", "corrupt"),
    ("empty image file", _with(image="empty.jpg"), "prefix", "image", "empty image file"),
    ("image not a string", _with(image=["a.jpg"]), "prefix", "image", "wrong type"),
    ("empty gpt answer", _turns(("h", "<image>\nQ"), ("g", " \n ")), "prefix", "conversations[1].value",
     "empty gpt answer"),
    ("unknown domain flag", _with(domain={"ct": True}), "prefix", "domain.ct", "unknown domain flag"),
    ("domain flag not a bool", _with(domain={"mri": "yes"}), "prefix", "domain.mri", "wrong type"),
    ("id not a string", _with(id=["x"]), "#0", "id", "wrong type"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "record", "record_id", "field", "reason"), BAD_LLAVA, ids=[c[0] for c in BAD_LLAVA])
def test_llava_bad_records_raise_naming_id_and_field(image_dir, case, record, record_id, field, reason):
    with pytest.raises(RecordError) as info:
        llava_to_messages([record], image_dir)
    error = info.value
    assert (error.record_id, error.field) == (record_id, field)
    assert reason in error.reason
    assert repr(record_id) in str(error) and repr(field) in str(error)


def test_llava_skip_mode_quarantines_and_counts(image_dir):
    good = llava_records()
    bad = [case[1] for case in BAD_LLAVA]
    mixed = [item for pair in zip(good, bad) for item in pair] + bad[len(good) :]
    dataset, quarantine = llava_to_messages(mixed, image_dir, errors="skip")
    assert messages_to_llava(dataset) == good
    assert len(quarantine) == len(bad)
    counts = quarantine.counts()
    assert sum(counts.values()) == len(bad)
    assert counts["image"] == 6 and counts["conversations"] == 6
    failures = quarantine.to_dataset()
    assert failures.column_names == ["record_id", "field", "reason", "record"]
    assert len(failures) == len(bad)
    row = next(r for r in failures if r["field"] == "conversations[1].value" and "empty" in r["reason"])
    assert row["record_id"] == "prefix"
    assert json.loads(row["record"])["conversations"][1]["value"] == " \n "


def test_non_object_records_and_bad_mode(image_dir):
    dataset, quarantine = llava_to_messages([llava_records()[0], "oops", None], image_dir, errors="skip")
    assert len(dataset) == 1
    assert [(r.record_id, r.field) for r in quarantine.records] == [("#1", "record"), ("#2", "record")]
    with pytest.raises(ValueError, match="errors must be"):
        llava_to_messages([], image_dir, errors="ignore")
    empty, quarantine = llava_to_messages([], image_dir)
    assert len(empty) == 0 and len(quarantine) == 0


# --------------------------------------------------------------------------------------------------------------------
# A. LLaVA-Med figure-caption records <-> pairs
# --------------------------------------------------------------------------------------------------------------------
def llava_med_records():
    return [
        {
            "pair_id": "PMC1_F1",  # image resolved as f"{pair_id}.jpg"
            "pmid": "1111",
            "fig_caption": "Axial CT of the chest.",
            "fig_label": "F1",
            "in_text_mention": ["CT showed a mass (Fig. 1).", "Ünïcödé µm  "],
            "domain": DOMAIN_CT,
        },
        {
            "pair_id": "PMC2_F3",
            "pmid": "2222",
            "image": "a.jpg",
            "fig_caption": "H&E stain, 40x.\nSecond line.",
            "in_text_mention": [
                {"tokens": "Histology (Fig. 3) showed ...", "ppl": 12.5, "idx": [1, 2]},
                {"tokens": "As in Fig. 3.", "sent_id": 7},
            ],
            "domain": {**DOMAIN_NONE, "histology": True, "gross": True},
            "license": "CC BY",  # unknown key: kept in `extra`
        },
        {
            "pair_id": "PMC3_F2",
            "pmid": 3333,  # an integer pmid comes back as an integer
            "image": "b.png",
            "fig_caption": "Gross specimen.",
            "fig_label": None,
            "in_text_mention": [],
        },
        {"pair_id": "PMC4_F9", "image": "a.jpg", "fig_caption": "No optional keys at all."},
    ]


def test_llava_med_round_trip_is_exact(image_dir, tmp_path):
    records = llava_med_records()
    dataset, quarantine = llava_med_records_to_pairs(copy.deepcopy(records), image_dir)
    assert len(quarantine) == 0
    check_columns(dataset, "pairs")
    valid, failures = validate_dataset(dataset, "pairs")
    assert len(valid) == len(records) and len(failures) == 0
    out = tmp_path / "out"
    back = pairs_to_llava_med_records(dataset, image_dir=out)
    assert back == records
    for name in ("PMC1_F1.jpg", "a.jpg", "b.png"):
        assert (out / name).read_bytes() == (image_dir / name).read_bytes()
    assert pairs_to_llava_med_records(list(dataset)) == records


def test_llava_med_mapping(image_dir):
    dataset = llava_med_records_to_pairs(llava_med_records(), image_dir).dataset
    first, second, third, fourth = list(dataset)
    assert first["id"] == "PMC1_F1" and first["caption"] == "Axial CT of the chest." and first["fig_label"] == "F1"
    assert first["mentions"] == ["CT showed a mass (Fig. 1).", "Ünïcödé µm  "]
    assert first["modality"] == "ct"
    assert first["source"] == {"origin": "pmc", "pmid": "1111", "url": "", "license": "", "citation": ""}
    assert first["image_file"] is None and first["mention_format"] == "strings"
    assert second["mentions"] == ["Histology (Fig. 3) showed ...", "As in Fig. 3."]
    assert second["mention_format"] == "tokens"
    assert [json.loads(e) for e in second["mention_extra"]] == [
        {"tokens": None, "ppl": 12.5, "idx": [1, 2]},
        {"tokens": None, "sent_id": 7},
    ]
    assert second["modality"] == "histology" and second["fig_label"] == ""
    assert json.loads(second["extra"]) == {"license": "CC BY"}
    assert third["source"]["pmid"] == "3333" and third["modality"] == "other" and third["domain"] is None
    assert fourth["absent_keys"] == ["pmid", "fig_label", "in_text_mention"] and fourth["mentions"] == []
    with PILImage.open(image_dir / "PMC1_F1.jpg") as source:
        assert np.array_equal(np.asarray(first["image"]), np.asarray(source))


def test_llava_med_per_record_function(image_dir):
    record = llava_med_records()[1]
    row = llava_med_record_to_pair(record, image_dir)
    assert row["image"] == {"bytes": (image_dir / "a.jpg").read_bytes(), "path": "a.jpg"}
    assert pairs_to_llava_med_records([row]) == [record]


def _med(**changes):
    record = copy.deepcopy(llava_med_records()[1])
    for key, value in changes.items():
        if value is None:
            record.pop(key, None)
        else:
            record[key] = value
    return record


BAD_LLAVA_MED = [
    ("missing pair_id", _med(pair_id=None), "#0", "pair_id", "missing"),
    ("missing caption", _med(fig_caption=None), "PMC2_F3", "fig_caption", "missing"),
    ("empty caption", _med(fig_caption="  "), "PMC2_F3", "fig_caption", "empty"),
    ("caption not a string", _med(fig_caption=["x"]), "PMC2_F3", "fig_caption", "wrong type"),
    ("mentions a number", _med(in_text_mention=3), "PMC2_F3", "in_text_mention", "wrong type"),
    ("mentions of a number", _med(in_text_mention=[{"tokens": "a"}, 5]), "PMC2_F3", "in_text_mention[1]", "expected"),
    ("token object without tokens", _med(in_text_mention=[{"ppl": 1.0}]), "PMC2_F3", "in_text_mention[0].tokens",
     "missing"),
    ("tokens not a string", _med(in_text_mention=[{"tokens": 1}]), "PMC2_F3", "in_text_mention[0].tokens",
     "wrong type"),
    ("fig_label not a string", _med(fig_label=2), "PMC2_F3", "fig_label", "wrong type"),
    ("pmid of a wrong type", _med(pmid=[1]), "PMC2_F3", "pmid", "wrong type"),
    ("domain not an object", _med(domain=[True]), "PMC2_F3", "domain", "wrong type"),
    ("missing image file", _med(image="nope.jpg"), "PMC2_F3", "image", "not found"),
    ("missing default image file", _med(image=None, pair_id="PMC9_F9"), "PMC9_F9", "image", "PMC9_F9.jpg"),
    ("corrupt image file", _med(image="garbage.jpg"), "PMC2_F3", "image", "corrupt"),
    ("not an object", ["PMC2_F3"], "#0", "record", "expected a JSON object"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "record", "record_id", "field", "reason"), BAD_LLAVA_MED, ids=[c[0] for c in BAD_LLAVA_MED]
)
def test_llava_med_bad_records_raise_naming_id_and_field(image_dir, case, record, record_id, field, reason):
    with pytest.raises(RecordError) as info:
        llava_med_records_to_pairs([record], image_dir)
    error = info.value
    assert (error.record_id, error.field) == (record_id, field)
    assert reason in error.reason
    assert repr(record_id) in str(error) and repr(field) in str(error)


def test_llava_med_skip_mode(image_dir):
    good = llava_med_records()
    bad = [case[1] for case in BAD_LLAVA_MED]
    dataset, quarantine = llava_med_records_to_pairs(bad + good, image_dir, errors="skip")
    assert pairs_to_llava_med_records(dataset) == good
    assert len(quarantine) == len(bad)
    assert quarantine.counts()["image"] == 3
    assert quarantine.to_dataset()["field"] == [case[3] for case in BAD_LLAVA_MED]


def test_image_token_constant():
    assert IMAGE_TOKEN == "<image>"
