"""VQA sets in LLaVA-Med's and BioMed-VITAL's evaluation files: answer types mapped explicitly and recorded, empty
questions and answers refused by id, truncated images named by the item's own id, repeated ids named."""

import json

import pytest

from vital.evaluation.benchmarks import ANSWER_TYPE_MAP, answer_type_mapping, chat_rows, load_benchmark
from vital.evaluation.fixtures import llava_med_vqa_records, open_chat_records, write_llava_med_vqa, write_open_chat
from vital.hub import LocalHub


def push(hub, tmp_path, name, records):
    folder = write_llava_med_vqa(tmp_path / name, records)
    hub.upload_folder(folder, f"fx/{name}")
    return f"{name}=fx/{name}@{hub.resolve(f'fx/{name}')}:test"


@pytest.fixture
def hub(tmp_path):
    return LocalHub(tmp_path / "hub")


def test_llava_med_eval_format_loads_with_its_answer_types(hub, tmp_path):
    records = llava_med_vqa_records(6, "llava-med")
    data, _ = load_benchmark(hub, push(hub, tmp_path, "rad", records), cache_dir=tmp_path / "cache")
    assert data["id"] == [f"rad-test-{r['id']}" for r in records]
    assert data["question"] == [r["conversations"][0]["value"].removeprefix("<image>\n") for r in records]
    assert data["answer"] == [r["conversations"][1]["value"] for r in records]
    assert data["answer_type"] == [r["answer_type"].lower() for r in records]
    assert data[0]["image"].size[0] > 0
    mapping = answer_type_mapping(data)
    assert {k: v["to"] for k, v in mapping.items()} == {"CLOSED": "closed", "OPEN": "open"}
    assert sum(v["items"] for v in mapping.values()) == 6


def test_biomed_vital_eval_file_maps_close_and_reads_integer_ids_and_answers(hub, tmp_path):
    records = llava_med_vqa_records(6, "biomed-vital")
    data, _ = load_benchmark(hub, push(hub, tmp_path, "vital", records), cache_dir=tmp_path / "cache")
    assert data["id"][0] == "vital-test-1000" and data["answer"][-1] == "1"
    mapping = answer_type_mapping(data)
    assert mapping["CLOSE"]["to"] == "closed" and mapping["open"]["to"] == "open"
    assert ANSWER_TYPE_MAP == {"open": "open", "closed": "closed", "close": "closed"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r[2]["conversations"][0].update(value="<image>\n  "), "item rep-test-{id}: empty question"),
        (lambda r: r[2]["conversations"][1].update(value=""), "item rep-test-{id}: empty answer"),
        (lambda r: r[2].update(answer_type="MAYBE"), "item rep-test-{id}: answer_type 'MAYBE'"),
        (lambda r: r[4].update(id=r[2]["id"]), "not unique: rep-test-{id} repeat"),
    ],
)
def test_bad_items_are_refused_by_their_own_id(hub, tmp_path, change, message):
    records = llava_med_vqa_records(6, "llava-med")
    change(records)
    with pytest.raises(ValueError, match=message.format(id=records[2]["id"])):
        load_benchmark(hub, push(hub, tmp_path, "rep", records), cache_dir=tmp_path / "cache")


def test_a_truncated_image_is_named_by_the_item_id_when_read(hub, tmp_path):
    records = llava_med_vqa_records(6, "llava-med")
    folder = write_llava_med_vqa(tmp_path / "trunc", records)
    image = folder / "images" / records[3]["image"]
    image.write_bytes(image.read_bytes()[:200])
    hub.upload_folder(folder, "fx/trunc")
    with pytest.raises(ValueError, match=rf"item trunc-test-{records[3]['id']}: image .* does not decode"):
        load_benchmark(hub, "trunc=fx/trunc@main:test", cache_dir=tmp_path / "cache")


def test_open_chat_names_repeated_ids_and_truncated_images(tmp_path):
    folder = write_open_chat(tmp_path / "chat")
    records = open_chat_records()
    records[2]["question_id"] = records[3]["question_id"] = 7
    with pytest.raises(ValueError, match=r"not unique: 7 \(2 times\)"):
        chat_rows(records, folder / "images")
    records = open_chat_records()
    path = folder / "images" / records[1]["image"]
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="open chat question 1: image .* does not decode"):
        chat_rows(records, folder / "images")
    assert json.loads((folder / "questions.jsonl").read_text().splitlines()[0])["question_id"] == 0
