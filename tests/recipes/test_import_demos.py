"""`vital import-demos <file>`: the official demonstrations list read from a Python file that is never executed."""

import textwrap

import numpy as np
import pytest
from datasets import load_dataset
from PIL import Image as PILImage

from vital.cli import main as vital_main
from vital.data.errors import RecordError
from vital.data.official_demos import read_demos_literal
from vital.hub import LocalHub


def flags(*true):
    return {f: f in true for f in ("chest_xray", "mri", "ct_scan", "histology", "gross")}


def demo(i, image, domain, **more):
    return {
        "id": i,
        "imgs": image,
        "domain": domain,
        "conversations": [
            {"from": "human", "value": f"Question {i} about the scan (5 µm, 90°)?"},
            {"from": "gpt", "value": f"Answer {i}: the α region is enlarged."},
        ],
        "fig_caption": f"Caption {i}.",
        "fig_id": f"F{i}",
        "fig_label": f"Figure {i}",
        "pair_id": f"{100 + i}_F{i}",
        "pmid": str(100 + i),
        "in_text_mention": [
            {"tokens": f"As shown ( Figure {i} ) .", "entities": [{"type": "figure", "entity_id": str(i)}]}
        ],
        **more,
    }


def write_demo_file(folder, demos, marker):
    images = folder / "images"
    images.mkdir(exist_ok=True)
    for k, d in enumerate(demos):
        PILImage.fromarray(np.full((8, 8, 3), 30 * k, np.uint8)).save(images / d["imgs"])
    source = textwrap.dedent(
        f"""
        import os
        SIDE_EFFECT = open({str(marker)!r}, "w")  # would create the marker file if this module ran
        os.system("touch {marker}")

        def helper():
            return 1

        fs = {demos!r}
        """
    )
    path = folder / "doctor_demos.py"
    path.write_text(source, encoding="utf-8")
    return path


def test_import_demos_reads_the_literal_without_running_the_file(tmp_path):
    marker = tmp_path / "executed"
    demos = [
        demo(1, "101_F1.jpg", flags("ct_scan")),
        demo(2, "102_F2.jpg", flags("mri", "ct_scan"), graphic_ref="aa/bb/PMC102/x.jpg"),
        demo(3, "103_F3.jpg", flags("chest_xray")),
    ]
    path = write_demo_file(tmp_path, demos, marker)
    assert read_demos_literal(path) == demos and read_demos_literal(path, "fs") == demos
    hub_dir = tmp_path / "hub"
    args = ["import-demos", str(path), "--image_dir", str(tmp_path / "images"), "--repo", "org/demos"]
    assert vital_main([*args, "--hub", f"local:{hub_dir}"]) == 0
    assert not marker.exists()  # nothing of the file ran

    hub = LocalHub(hub_dir)
    data = load_dataset(str(hub.snapshot("org/demos", hub.resolve("org/demos"))), split="train")
    assert data["id"] == ["1", "2", "3"]
    assert data["modalities"] == [["ct"], ["mri", "ct"], ["chest_xray"]]
    assert data["modality"] == ["ct", "mri", "chest_xray"]
    assert data[1]["messages"][0]["content"][0] == {"type": "image", "text": None}
    assert data["pair_id"][1] == "102_F2" and '"graphic_ref": "aa/bb/PMC102/x.jpg"' in data["extra"][1]
    assert data["mentions"][0] == ["As shown ( Figure 1 ) ."]
    card = hub.read_card("org/demos").text
    assert "1 demonstration(s) carry more than one domain flag" in card and "never run" in card


def test_code_in_the_literal_and_repeated_ids_are_refused(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("fs = [{'id': 1, 'conversations': __import__('os').getcwd()}]\n")
    with pytest.raises(ValueError, match="no list literal of demonstrations"):
        read_demos_literal(bad)
    with pytest.raises(ValueError, match=r"line 1: 'fs' is not a plain literal"):
        read_demos_literal(bad, "fs")
    demos = [demo(1, "a.jpg", flags("mri")), demo(1, "b.jpg", flags("gross"))]
    path = write_demo_file(tmp_path, demos, tmp_path / "m")
    args = ["import-demos", str(path), "--image_dir", str(tmp_path / "images"), "--repo", "org/d"]
    args += ["--hub", f"local:{tmp_path}/hub"]
    with pytest.raises(RecordError, match=r"record '1', field 'id': duplicate id: demo #1 repeats demo #0"):
        vital_main(args)
    assert vital_main([*args, "--errors", "skip"]) == 0
    hub = LocalHub(tmp_path / "hub")
    q = load_dataset(str(hub.snapshot("org/d", hub.resolve("org/d"))), "quarantine", split="train")
    assert q["record_id"] == ["1"] and q["field"] == ["id"]


def test_push_to_hub_false_reads_and_checks_and_pushes_nothing(tmp_path, capsys):
    demos = [demo(1, "a.jpg", flags("mri")), demo(1, "b.jpg", flags("gross")), demo(2, "c.jpg", flags("ct_scan"))]
    path = write_demo_file(tmp_path, demos, tmp_path / "m")
    hub_dir = tmp_path / "hub"
    args = ["import-demos", str(path), "--image_dir", str(tmp_path / "images"), "--repo", "org/d"]
    args += ["--hub", f"local:{hub_dir}", "--errors", "skip", "--push_to_hub", "false"]
    assert vital_main(args) == 0
    assert "nothing pushed: 2 demos, 1 quarantined" in capsys.readouterr().out
    assert not hub_dir.exists()
