"""The sample data bundled with the package: real images, honest provenance, and datasets that meet the contracts."""

from __future__ import annotations

import io
import json
import re
import shutil

import numpy as np
import pytest
from datasets import Value
from PIL import Image as PILImage

import vital.data.sample as sample
from vital.data.errors import RecordError
from vital.data.sample import load_sample_demos, load_sample_pairs, sample_dir, sample_manifest_sha256
from vital.data.schemas import (
    MODALITIES,
    PAIR_FEATURES,
    count_image_parts,
    qa_turns,
    validate_dataset,
)


def records(name):
    return json.loads((sample_dir() / name).read_text(encoding="utf-8"))


def sources_rows():
    """SOURCES.md table rows as {file: cells}."""
    rows = {}
    for line in (sample_dir() / "SOURCES.md").read_text(encoding="utf-8").splitlines():
        match = re.match(r"\| `([^`]+\.png)` \|(.*)\|$", line)
        if match:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", match.group(2))]
            rows[match.group(1)] = cells
    return rows


@pytest.fixture(scope="module")
def pairs():
    return load_sample_pairs()


@pytest.fixture(scope="module")
def demos(pairs):
    return load_sample_demos(pairs)


@pytest.fixture
def sample_copy(tmp_path, monkeypatch):
    """A writable copy of the sample folder that the loaders read instead of the package's."""
    root = tmp_path / "sample"
    shutil.copytree(sample_dir(), root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    monkeypatch.setattr(sample, "sample_dir", lambda: root)
    return root


# --------------------------------------------------------------------------------------------------------------------
# Counts and coverage
# --------------------------------------------------------------------------------------------------------------------
def test_pairs_cover_enough_images_and_modalities():
    pair_records = records("pairs.json")
    assert len(pair_records) >= 12
    modalities = {p["modality"] for p in pair_records}
    assert len(modalities) >= 4
    assert modalities <= set(MODALITIES)
    ids = [p["id"] for p in pair_records]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"sample-[a-z_]+-\d{4}", i) for i in ids)


def test_demos_one_per_modality_with_four_or_more_exchanges():
    demo_records = records("demos.json")
    pair_modality = {p["id"]: p["modality"] for p in records("pairs.json")}
    assert len(demo_records) >= 5
    modalities = [pair_modality[d["pair_id"]] for d in demo_records]
    assert len(set(modalities)) == len(modalities), "one demo per modality"
    assert set(modalities) == set(pair_modality.values()), "every modality in the pairs has a demo"
    for demo in demo_records:
        roles = [m["role"] for m in demo["messages"]]
        assert roles == ["user", "assistant"] * (len(roles) // 2), demo["id"]
        assert len(roles) // 2 >= 4, demo["id"]
        assert "not clinician-reviewed" in demo["curated_by"]
        assert isinstance(demo["cluster"], int)


def test_every_pair_reads_like_a_figure_with_its_mentions():
    for pair in records("pairs.json"):
        assert len(pair["caption"]) > 80, pair["id"]
        assert 1 <= len(pair["mentions"]) <= 3, pair["id"]
        assert any(pair["fig_label"] in m for m in pair["mentions"]), f"{pair['id']}: no mention names its figure"
        assert pair["source"]["pmid"] == "", "sample pairs are not from PMC"


# --------------------------------------------------------------------------------------------------------------------
# Images and provenance
# --------------------------------------------------------------------------------------------------------------------
def test_every_image_is_a_real_small_8bit_picture():
    files = sorted((sample_dir() / "images").glob("*.png"))
    assert files
    assert sum(f.stat().st_size for f in files) < 1_000_000
    for path in files:
        with PILImage.open(path) as image:
            image.load()
            assert image.format == "PNG"
            assert image.mode in ("L", "RGB"), path.name
            assert max(image.size) <= 256, path.name
            pixels = np.asarray(image)
        assert pixels.dtype == np.uint8
        assert pixels.std() > 5, f"{path.name} is (nearly) constant"
        assert len(np.unique(pixels)) >= 32, f"{path.name} has too few grey levels to be a real image"


def test_images_and_pairs_match_one_to_one():
    files = {f.name for f in (sample_dir() / "images").glob("*.png")}
    used = {p["image"] for p in records("pairs.json")}
    assert used == files


def test_every_image_has_a_sources_row_with_a_licence():
    rows = sources_rows()
    modality = {p["image"]: p["modality"] for p in records("pairs.json")}
    for name in (f.name for f in (sample_dir() / "images").glob("*.png")):
        assert name in rows, f"{name} missing from SOURCES.md"
        row_modality, origin, upstream, licence, transform = rows[name]
        assert row_modality == modality[name]
        assert "==" in origin, "origin names package==version"
        assert upstream and transform
        assert len(licence) > 20, f"{name}: licence missing"
    text = (sample_dir() / "SOURCES.md").read_text(encoding="utf-8")
    assert "written for this" in text and "not been reviewed by clinicians" in text


def test_every_pair_source_names_origin_and_licence():
    rows = sources_rows()
    for pair in records("pairs.json"):
        source = pair["source"]
        assert re.match(r"[\w.-]+==[\w.]+: ", source["origin"]), pair["id"]
        assert source["license"] and source["citation"] and source["url"], pair["id"]
        assert f"`{source['origin']}`" == rows[pair["image"]][1], pair["id"]


# --------------------------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------------------------
def test_pairs_dataset_meets_the_contract(pairs):
    assert pairs.features == PAIR_FEATURES
    assert len(pairs) == len(records("pairs.json"))
    valid, quarantine = validate_dataset(pairs, "pairs")
    assert len(valid) == len(pairs) and len(quarantine) == 0


def test_pairs_embed_image_bytes_not_paths(pairs):
    from datasets import Image

    raw = pairs.cast_column("image", Image(decode=False))
    for cell, name in zip(raw["image"], pairs["id"], strict=True):
        assert cell["bytes"], name
        assert "/" not in cell["path"], "only the bare file name, no machine path"
    image = pairs[0]["image"]
    assert isinstance(image, PILImage.Image) and image.size[0] > 0


def test_demos_dataset_meets_the_contract(demos):
    from vital.data.schemas import DEMO_FEATURES

    assert demos.features == {**DEMO_FEATURES, "pair_id": Value("string")}  # the link to the pair, kept
    assert demos["pair_id"] == [d["pair_id"] for d in records("demos.json")]
    valid, quarantine = validate_dataset(demos, "demos")
    assert len(valid) == len(demos) and len(quarantine) == 0
    assert list(demos["id"]) == [d["id"] for d in records("demos.json")]


def test_demo_messages_are_typed_with_the_image_first(demos):
    for row, record in zip(demos, records("demos.json"), strict=True):
        messages = row["messages"]
        assert count_image_parts(messages) == 1
        assert messages[0]["role"] == "user"
        assert messages[0]["content"][0] == {"type": "image", "text": None}
        assert [q for q, _ in qa_turns(messages)] == [m["content"] for m in record["messages"] if m["role"] == "user"]
        assert len(qa_turns(messages)) >= 4


def test_demos_join_to_their_pairs(pairs, demos):
    by_id = {row["id"]: row for row in pairs}
    for row, record in zip(demos, records("demos.json"), strict=True):
        pair = by_id[record["pair_id"]]
        for column in ("caption", "fig_label", "mentions", "modality", "source"):
            assert row[column] == pair[column], (row["id"], column)
        assert np.array_equal(np.asarray(row["image"]), np.asarray(pair["image"])), row["id"]


def test_demos_take_their_pair_columns_from_the_given_pairs(pairs):
    edited = pairs.map(lambda row: {"caption": "EDITED " + row["caption"]})
    demos = load_sample_demos(edited)
    assert all(caption.startswith("EDITED ") for caption in demos["caption"])


def test_demos_default_to_the_bundled_pairs(demos):
    assert list(load_sample_demos()["caption"]) == list(demos["caption"])


def test_missing_pair_names_the_demo_and_field(pairs):
    first = records("demos.json")[0]
    without = pairs.filter(lambda row: row["id"] != first["pair_id"])
    with pytest.raises(RecordError) as info:
        load_sample_demos(without)
    assert info.value.record_id == first["id"]
    assert info.value.field == "pair_id"
    assert first["pair_id"] in str(info.value)


def test_malformed_demo_messages_name_the_demo(sample_copy):
    demo_records = json.loads((sample_copy / "demos.json").read_text())
    demo_records[1]["messages"][2]["content"] = ["not", "a", "string"]
    (sample_copy / "demos.json").write_text(json.dumps(demo_records))
    with pytest.raises(RecordError) as info:
        load_sample_demos()
    assert info.value.record_id == demo_records[1]["id"]
    assert info.value.field == "messages[2].content"


def test_pairs_with_a_missing_image_name_the_pair(sample_copy):
    name = json.loads((sample_copy / "pairs.json").read_text())[0]
    (sample_copy / "images" / name["image"]).unlink()
    with pytest.raises(RecordError) as info:
        load_sample_pairs()
    assert (info.value.record_id, info.value.field) == (name["id"], "image")


# --------------------------------------------------------------------------------------------------------------------
# Lineage
# --------------------------------------------------------------------------------------------------------------------
def test_manifest_hash_is_stable_and_tracks_content(sample_copy, monkeypatch):
    digest = sample_manifest_sha256()
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert sample_manifest_sha256() == digest
    monkeypatch.undo()
    assert sample_manifest_sha256() == digest, "the copy hashes like the package's own files"
    monkeypatch.setattr(sample, "sample_dir", lambda: sample_copy)
    (sample_copy / "SOURCES.md").write_text("edited")
    assert sample_manifest_sha256() == digest, "only the JSON files and images count"
    demo_records = json.loads((sample_copy / "demos.json").read_text())
    demo_records[0]["cluster"] = 3
    (sample_copy / "demos.json").write_text(json.dumps(demo_records))
    changed = sample_manifest_sha256()
    assert changed != digest
    image = next((sample_copy / "images").glob("*.png"))
    image.write_bytes(image.read_bytes() + b"\0")
    assert sample_manifest_sha256() not in (digest, changed)


# --------------------------------------------------------------------------------------------------------------------
# The build script reproduces the committed pixels (for the inputs installed here)
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_build_script_reproduces_the_committed_pixels():
    pytest.importorskip("pydicom")
    pytest.importorskip("skimage")
    pytest.importorskip("nibabel")
    from vital.data.sample.build_sample import SPECS, Inputs, render

    inputs = Inputs()
    built = 0
    for spec in SPECS:
        if spec.package == "pydicom-data":  # a 34 MB wheel that is not installed in CI
            continue
        png, transform = render(spec, inputs)
        committed = np.asarray(PILImage.open(sample_dir() / "images" / spec.file)).astype(int)
        rebuilt = np.asarray(PILImage.open(io.BytesIO(png))).astype(int)
        assert rebuilt.shape == committed.shape, spec.file
        # JPEG decoders may differ by a grey level between library versions; everything else is exact.
        assert np.abs(rebuilt - committed).max() <= 2, spec.file
        assert transform in sources_rows()[spec.file][-1], spec.file
        built += 1
    assert built >= 8
