"""Every public layout of the field, in records written for these tests: load, push, `load_dataset(snapshot, config)`,
export, and compare byte for byte; every refusal names the record and field; skip mode pushes a `quarantine` config."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from datasets import load_dataset
from PIL import Image as PILImage

from recipes import import_released, ingest
from vital.data.errors import RecordError
from vital.data.llava import export_llava, export_llava_med, llava_med_records_to_pairs, llava_to_messages
from vital.hub import LocalHub


LONG = "The lesion measures 3 µm at 37 °C; α-SMA and β-catenin stain the stroma. " * 300  # ~22k characters
FLAGS = ("chest_xray", "mri", "ct_scan", "histology", "gross")


def flags(*true):
    return {flag: flag in true for flag in FLAGS}


def write_images(folder: Path) -> None:
    """JPEG and PNG files, some in sub-folders, one PNG under a .jpg name."""
    rng = np.random.default_rng(1)
    for name, fmt, size in [
        ("PMC123/fig1.jpg", "JPEG", (20, 24, 3)),
        ("PMC123/fig2.jpg", "PNG", (12, 10, 3)),  # PNG bytes under a .jpg name: kept as they are
        ("PMC456_F3.jpg", "JPEG", (16, 16, 3)),
        ("PMC789/a/b.png", "PNG", (8, 8, 4)),
        ("plain.jpg", "JPEG", (9, 11, 3)),
    ]:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        PILImage.fromarray(rng.integers(0, 255, size, dtype=np.uint8)).save(path, format=fmt)


def figure_caption_file():
    """LLaVA-Med figure-caption records in the released {domain: [records]} layout, every in_text_mention shape."""
    return {
        "ct_scan": [
            {
                "pair_id": "PMC123_F1",
                "pmid": "123",
                "image": "PMC123/fig1.jpg",
                "fig_caption": "Axial CT at 90° shows a 5 µm nodule (α region).",
                "fig_label": "Figure 1",
                "in_text_mention": None,
                "domain": flags("ct_scan"),
                "graphic_ref": "ab/cd/PMC123/fig1.jpg",
            },
            {
                "in_text_mention": "CT confirmed the finding (Fig. 2).",
                "pair_id": "PMC123_F2",  # keys in another order
                "image": "PMC123/fig2.jpg",
                "pmid": 123,
                "fig_caption": LONG,
                "fig_label": "Fig. 2",
                "domain": flags("ct_scan", "mri"),
            },
        ],
        "histology": [
            {
                "pair_id": "PMC456_F3",
                "pmid": "456",
                "fig_caption": "H&E, ×40: γδ T cells.",
                "fig_label": "F3",
                "in_text_mention": [
                    {
                        "tokens": "Histology showed γδ T cells ( Figure 3 ) .",
                        "entities": [{"type": "figure", "entity_id": "3", "start_tok": 5, "end_tok": 7}],
                    },
                    "A plain sentence about Figure 3.",
                ],
                "domain": flags("histology"),
            }
        ],
        "gross": [
            {
                "pair_id": "PMC789_F1",
                "pmid": "789",
                "image": "PMC789/a/b.png",
                "fig_caption": "Resected specimen, 4 cm.",
                "fig_label": "Figure 1",
                "in_text_mention": ["First mention.", "Second mention, Ω."],
                "domain": flags(),
            }
        ],
    }


def instruction_records():
    """BioMed-VITAL generator output (integer ids, no <image>) beside LLaVA records with extra keys and orders."""
    return [
        {
            "id": 1,
            "image": "PMC123/fig1.jpg",
            "domain": flags("ct_scan"),
            "conversations": [
                {"from": "human", "value": "What modality is this, measured in µm?"},
                {"from": "gpt", "value": "A CT slice; the nodule is 5 µm at 90°."},
                {"from": "human", "value": "Any α or β findings?"},
                {"from": "gpt", "value": LONG},
            ],
            "fig_caption": "Axial CT.",
            "pair_id": "PMC123_F1",
        },
        {
            "conversations": [
                {"value": "<image>\nDescribe the stain.", "from": "human", "turn_id": 0},
                {"from": "gpt", "value": "γδ T cells in H&E.", "score": 9, "rater": {"name": "r1", "round": 2}},
            ],
            "id": "PMC456_F3-0",
            "image": "PMC456_F3.jpg",
            "source": "biomed-vital",
        },
        {
            "id": 3,
            "image": "PMC123/fig2.jpg",
            "conversations": [{"from": "human", "value": ""}, {"from": "gpt", "value": "Answer: 42"}],
        },
    ]


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "images"
    write_images(images)
    return tmp_path


def snapshot_config(hub: LocalHub, repo: str, config: str, commit: str):
    return load_dataset(str(hub.snapshot(repo, commit)), config, split="train")


def assert_same_images(names, source: Path, out: Path):
    for name in names:
        assert (out / name).read_bytes() == (source / name).read_bytes(), name


def test_figure_caption_domain_file_round_trips_byte_for_byte_through_the_hub(folder):
    source = folder / "fig_captions.json"
    source.write_text(json.dumps(figure_caption_file(), indent=2, ensure_ascii=False), encoding="utf-8")
    hub_dir = folder / "hub"
    args = ["--hub", f"local:{hub_dir}", "--pairs_source", "llava-med", "--records", str(source)]
    args += ["--image_dir", str(folder / "images"), "--demos_source", "none", "--pairs_repo", "pmc/pairs"]
    (pushed,) = ingest.cli(args)
    hub = LocalHub(hub_dir)
    pairs = snapshot_config(hub, "pmc/pairs", "default", pushed.commit)
    # zip_longest over the domains, as LLaVA-Med reads the file; the domain key fills the modality
    assert pairs["id"] == ["PMC123_F1", "PMC456_F3", "PMC789_F1", "PMC123_F2"]
    assert pairs["modality"] == ["ct", "histology", "gross", "ct"]
    assert pairs["mentions"][0] == [] and pairs["mentions"][3] == ["CT confirmed the finding (Fig. 2)."]
    assert pairs["mentions"][1] == ["Histology showed γδ T cells ( Figure 3 ) .", "A plain sentence about Figure 3."]
    assert pairs["caption"][3] == LONG

    out = folder / "out"
    export_llava_med(pairs, out / "fig_captions.json", out / "images", indent=2, ensure_ascii=False)
    assert (out / "fig_captions.json").read_bytes() == source.read_bytes()
    assert_same_images(
        ["PMC123/fig1.jpg", "PMC123/fig2.jpg", "PMC456_F3.jpg", "PMC789/a/b.png"], folder / "images", out / "images"
    )
    with PILImage.open(out / "images" / "PMC123/fig2.jpg") as im:
        assert im.format == "PNG"


def test_figure_caption_list_and_jsonl_layouts_round_trip(folder):
    records = [r for group in figure_caption_file().values() for r in group]
    for name, text in [
        ("list.json", json.dumps(records)),
        ("lines.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)),
    ]:
        source = folder / name
        source.write_text(text, encoding="utf-8")
        pairs, quarantine = llava_med_records_to_pairs(source, folder / "images")
        assert len(quarantine) == 0 and pairs["domain_key"] == [None] * len(records)
        assert pairs["modality"] == ["ct", "mri", "histology", "other"]  # from the flags without a domain key
        out = folder / f"out-{name}"
        export_llava_med(pairs, out, ensure_ascii=name.endswith(".json"))
        assert out.read_bytes() == source.read_bytes()


def test_instruction_files_without_placeholders_round_trip_through_import(folder):
    records = instruction_records()
    as_list = folder / "vital.json"
    as_list.write_text(json.dumps(records), encoding="utf-8")
    as_lines = folder / "vital.jsonl"
    as_lines.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    hub_dir = folder / "hub"
    args = ["import", "--files", f"list={as_list}", f"lines={as_lines}", "--image_dir", str(folder / "images")]
    args += ["--repo", "org/released", "--hub", f"local:{hub_dir}"]
    from vital.cli import main as vital_main

    assert vital_main(args) == 0
    hub = LocalHub(hub_dir)
    commit = hub.resolve("org/released")
    data = snapshot_config(hub, "org/released", "list", commit)
    assert data["image_placeholder"] == ["inserted", "inline", "inserted"]
    # The image goes before the first human turn's text, as LLaVA's training code puts "<image>\n" there.
    assert data[0]["messages"][0]["content"][0] == {"type": "image", "text": None}
    assert data[2]["messages"][0]["content"] == [{"type": "image", "text": None}, {"type": "text", "text": ""}]
    card = hub.read_card("org/released").text
    assert "image_placement: first_turn" in card and "| `list` | `vital.json` | 3 | 0 | 2 |" in card

    for config, source, options in [("list", as_list, {}), ("lines", as_lines, {})]:
        out = folder / f"out-{config}"
        export_llava(
            snapshot_config(hub, "org/released", config, commit), out / source.name, out / "images", **options
        )
        assert (out / source.name).read_bytes() == source.read_bytes()
        assert_same_images(["PMC123/fig1.jpg", "PMC123/fig2.jpg", "PMC456_F3.jpg"], folder / "images", out / "images")


def test_require_placement_refuses_records_without_a_placeholder(folder):
    with pytest.raises(RecordError, match=r"record '1', field 'conversations': no <image> placeholder"):
        llava_to_messages(instruction_records(), folder / "images", image_placement="require")


def bad_figure_records(folder: Path):
    outside = folder / "secret.png"
    PILImage.fromarray(np.zeros((4, 4, 3), np.uint8)).save(outside)
    good = [r for group in figure_caption_file().values() for r in group]
    return good + [
        {"pair_id": "ABS", "fig_caption": "c", "image": str(outside)},
        {"pair_id": "UP", "fig_caption": "c", "image": "../secret.png"},
        {**good[0], "fig_caption": "a second record with the same id"},
        {"pair_id": "GONE", "fig_caption": "c", "image": "missing.jpg"},
    ]


@pytest.mark.parametrize(
    ("index", "record_id", "field", "reason"),
    [
        (4, "ABS", "image", "outside the image folder"),
        (5, "UP", "image", "outside the image folder"),
        (6, "PMC123_F1", "pair_id", "duplicate id: record #4 repeats record #0"),
    ],
)
def test_refusals_name_the_record_and_field(folder, index, record_id, field, reason):
    records = bad_figure_records(folder)
    with pytest.raises(RecordError) as info:
        llava_med_records_to_pairs([*records[:4], records[index]], folder / "images")
    assert (info.value.record_id, info.value.field) == (record_id, field) and reason in info.value.reason


def test_ingest_skip_mode_pushes_every_refused_record_to_a_quarantine_config(folder, caplog):
    source = folder / "records.jsonl"
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in bad_figure_records(folder)]
    lines.insert(2, b'{"pair_id": "LATIN1", "fig_caption": "caf\xe9"}')  # one byte that is not UTF-8
    source.write_bytes(b"\n".join(lines) + b"\n")
    hub_dir = folder / "hub"
    args = ["--hub", f"local:{hub_dir}", "--pairs_source", "llava-med", "--records", str(source)]
    args += ["--image_dir", str(folder / "images"), "--demos_source", "none", "--pairs_repo", "pmc/pairs"]
    with pytest.raises(RecordError, match=r"record 'line 3', field 'record': not UTF-8"):
        ingest.cli(args)
    with caplog.at_level(logging.WARNING):
        (pushed,) = ingest.cli([*args, "--errors", "skip"])
    hub = LocalHub(hub_dir)
    pairs = snapshot_config(hub, "pmc/pairs", "default", pushed.commit)
    assert len(pairs) == 4
    quarantine = snapshot_config(hub, "pmc/pairs", "quarantine", hub.resolve("pmc/pairs"))
    rows = {r["record_id"]: r for r in quarantine}
    assert set(rows) == {"line 3", "ABS", "UP", "PMC123_F1", "GONE"}
    assert rows["line 3"]["record"] == '{"pair_id": "LATIN1", "fig_caption": "caf\\xe9"}'
    assert rows["PMC123_F1"]["field"] == "pair_id" and "duplicate id" in rows["PMC123_F1"]["reason"]
    assert json.loads(rows["UP"]["record"])["image"] == "../secret.png"
    assert "outside the image folder (image): 2" in caplog.text and "duplicate id (pair_id): 1" in caplog.text
    card = hub.read_card("pmc/pairs").text
    assert "5 record(s) were quarantined" in card and 'load_dataset("pmc/pairs", "quarantine")' in card

    # A clean rerun removes the quarantine config: nothing stale stays behind.
    clean = folder / "clean.json"
    clean.write_text(json.dumps(figure_caption_file()), encoding="utf-8")
    ingest.cli([*args[:5], str(clean), *args[6:], "--errors", "skip"])
    configs = [c["config_name"] for c in hub.read_card("pmc/pairs").data.to_dict()["configs"]]
    assert configs == ["default"]


def test_import_quarantines_duplicates_and_lists_them_by_file(folder):
    records = instruction_records()
    source = folder / "dup.json"
    source.write_text(json.dumps([*records, {**records[1], "conversations": records[0]["conversations"]}]))
    hub_dir = folder / "hub"
    import_released.cli(
        [
            "--files",
            f"dup={source}",
            "--image_dir",
            str(folder / "images"),
            "--repo",
            "org/r",
            "--hub",
            f"local:{hub_dir}",
        ]
    )
    hub = LocalHub(hub_dir)
    commit = hub.resolve("org/r")
    assert snapshot_config(hub, "org/r", "dup", commit)["id"] == ["1", "PMC456_F3-0", "3"]
    (row,) = snapshot_config(hub, "org/r", "quarantine", commit)
    assert (row["record_id"], row["field"], row["config"]) == ("PMC456_F3-0", "id", "dup")
    assert "duplicate id: record #3 repeats record #1" in row["reason"]


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 20])
def test_the_streamed_json_list_parser_agrees_with_json_load_across_chunk_boundaries(tmp_path, chunk):
    from vital.data.llava import iter_json_array

    items = [{"id": 12345678, "v": 'a "q" µ\n]', "n": [1.5e3, None, True]}, 7, "s,", [], {"deep": {"x": [{}]}}, -0.25]
    path = tmp_path / "list.json"
    path.write_text(" \n" + json.dumps(items, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    assert list(iter_json_array(path, chunk_chars=chunk)) == json.loads(path.read_text(encoding="utf-8"))
    path.write_text('[{"a": 1}, {"a": 2} {"a": 3}]', encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 1: expected ',' or ']'"):
        list(iter_json_array(path, chunk_chars=chunk))


def test_a_json_file_with_a_bad_byte_or_a_symlink_out_of_the_folder_is_named(folder):
    source = folder / "bad.json"
    source.write_bytes(b'[\n{"pair_id": "A", "fig_caption": "ok"},\n{"pair_id": "B", "fig_caption": "caf\xe9"}\n]')
    with pytest.raises(ValueError, match=r"bad.json: line 3, byte \d+: not UTF-8"):
        llava_med_records_to_pairs(source, folder / "images")
    outside = folder / "outside.jpg"
    outside.write_bytes((folder / "images" / "plain.jpg").read_bytes())
    (folder / "images" / "link.jpg").symlink_to(outside)
    record = {"pair_id": "L", "fig_caption": "c", "image": "link.jpg"}
    with pytest.raises(RecordError, match=r"record 'L', field 'image': outside the image folder"):
        llava_med_records_to_pairs([record], folder / "images")
