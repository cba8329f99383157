"""The ingest recipe and the quickstart pipeline skeleton, end to end on a local hub."""

import json
from pathlib import Path

import numpy as np
import pytest
from datasets import load_dataset
from PIL import Image as PILImage

from vital.cards import lineage_of
from vital.cli import main as vital_main
from vital.data.errors import RecordError
from vital.data.sample import load_sample_pairs, sample_manifest_sha256
from vital.hub import HubError, LocalHub
from vital.runner import load_recipe


ingest = load_recipe("ingest")
pipeline = load_recipe("pipeline")


def test_ingest_pushes_pairs_and_demos_with_lineage(tmp_path, capsys):
    hub_spec = f"local:{tmp_path}/hub"
    pushed = ingest.cli(["--config", "recipes/quickstart/ingest.yaml", "--hub", hub_spec, "--pairs_repo", "t/pairs"])
    pairs_push, demos_push = pushed
    hub = LocalHub(tmp_path / "hub")

    # Loadable with datasets alone, from the commit's snapshot folder.
    pairs = load_dataset(str(hub.snapshot("t/pairs", pairs_push.commit)), split="train")
    assert len(pairs) == len(load_sample_pairs()) >= 12
    demos = hub.load_dataset("quickstart/demos", split="train", revision=demos_push.commit)
    assert len(set(demos["modality"])) == len(demos) >= 5

    # The pairs card names the sample data it came from; the demos card names the pairs commit.
    pairs_lineage = lineage_of(hub.read_card("t/pairs"))
    assert pairs_lineage["inputs"] == [{"source": "biomed-vital sample data", "sha256": sample_manifest_sha256()}]
    demos_lineage = lineage_of(hub.read_card("quickstart/demos"))
    assert demos_lineage["inputs"][0]["commit"] == pairs_push.commit
    assert demos_lineage["config"]["pairs_repo"] == "t/pairs" and demos_lineage["seed"] == 0
    # The demo images are the pairs' images.
    by_id = {p["id"]: p for p in pairs}
    for demo in demos:
        np.testing.assert_array_equal(np.asarray(demo["image"]), np.asarray(by_id[demo["pair_id"]]["image"]))

    out = capsys.readouterr().out
    assert pairs_push.commit[:12] in out and demos_push.commit[:12] in out

    # Idempotent: the same inputs and config make no new commits.
    again = ingest.cli(["--config", "recipes/quickstart/ingest.yaml", "--hub", hub_spec, "--pairs_repo", "t/pairs"])
    assert [p.commit for p in again] == [p.commit for p in pushed] and not any(p.created for p in again)


def write_records(tmp_path, records):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        PILImage.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(images / f"P{i}.jpg")
    (images / "P2.jpg").write_bytes(b"not a jpeg")
    path = tmp_path / "records.json"
    path.write_text(json.dumps(records))
    return path, images


RECORDS = [
    {
        "pair_id": f"P{i}",
        "fig_caption": f"Caption {i}.",
        "fig_label": "F1",
        "in_text_mention": [{"tokens": "See Fig. 1."}],
        "domain": {"chest_xray": False, "mri": True, "ct_scan": False, "histology": False, "gross": False},
    }
    for i in range(3)
]


def test_ingest_llava_med_records_raise_or_quarantine(tmp_path):
    path, images = write_records(tmp_path, RECORDS)
    args = ["--hub", f"local:{tmp_path}/hub", "--pairs_source", "llava-med", "--records", str(path)]
    args += ["--image_dir", str(images), "--demos_source", "none", "--pairs_repo", "pmc/pairs"]
    with pytest.raises(RecordError, match=r"record 'P2', field 'image'"):
        ingest.cli(args)
    (pushed,) = ingest.cli([*args, "--errors", "skip"])
    hub = LocalHub(tmp_path / "hub")
    pairs = hub.load_dataset("pmc/pairs", split="train", revision=pushed.commit)
    assert pairs["id"] == ["P0", "P1"] and set(pairs["modality"]) == {"mri"}
    card = hub.read_card("pmc/pairs")
    assert "1 record(s) were quarantined" in card.text
    assert lineage_of(card)["inputs"][0]["source"] == str(path)


def test_pipeline_runs_stages_and_cli_reads_the_hub(tmp_path, capsys):
    config = tmp_path / "pipeline.yaml"
    stage_config = Path(__file__).resolve().parents[2] / "recipes/quickstart/ingest.yaml"
    config.write_text(f"hub: local:{tmp_path}/hub\nstages:\n  - ingest={stage_config}\n")
    pushed = pipeline.cli(["--config", str(config), "--report_dir", str(tmp_path / "report")])
    assert [p.repo_id for p in pushed] == ["quickstart/pairs", "quickstart/demos"]
    assert "Artifacts" in capsys.readouterr().out
    with pytest.raises(ValueError, match="does not have"):
        pipeline.cli(["--config", str(config), "--only", "select"])

    assert vital_main(["hub", "resolve", "quickstart/pairs", "--hub", f"local:{tmp_path}/hub"]) == 0
    assert capsys.readouterr().out.strip() == pushed[0].commit
    assert vital_main(["hub", "log", "quickstart/demos", "--hub", f"local:{tmp_path}/hub"]) == 0
    assert pushed[1].commit[:12] in capsys.readouterr().out
    assert vital_main(["hub", "resolve", "quickstart/pairs@nope", "--hub", f"local:{tmp_path}/hub"]) == 1
    with pytest.raises(SystemExit, match="unknown stage"):
        vital_main(["no-such-stage"])


def test_hub_options_branch_privacy_and_no_push(tmp_path, capsys):
    """`hub_revision` names the branch pushed to, `hub_private_repo: false` makes public repos, `push_to_hub: false`
    writes nothing at all; the old names (`revision`, `private`) are refused, not silently ignored."""
    path, images = write_records(tmp_path, RECORDS)
    llava = ["--pairs_source", "llava-med", "--records", str(path), "--image_dir", str(images), "--errors", "skip"]
    llava += ["--demos_source", "none"]
    hub_dir = tmp_path / "hub"

    # push_to_hub false: the pairs are read and checked (the bad one counted), the demos joined, nothing written.
    assert ingest.cli(["--hub", f"local:{hub_dir}", *llava, "--push_to_hub", "false"]) == []
    assert "nothing pushed: 2 pairs, 1 quarantined" in capsys.readouterr().out
    assert not hub_dir.exists()
    assert (
        ingest.cli(
            ["--config", "recipes/quickstart/ingest.yaml", "--hub", f"local:{hub_dir}", "--push_to_hub", "false"]
        )
        == []
    )
    assert f"{len(load_sample_pairs())} pairs, 0 quarantined, " in capsys.readouterr().out
    assert not hub_dir.exists()

    # A branch of its own, public repos; main is never written.
    args = ["--config", "recipes/quickstart/ingest.yaml", "--hub", f"local:{hub_dir}"]
    pairs, demos = ingest.cli([*args, "--hub_revision", "exp", "--hub_private_repo", "false"])
    assert (pairs.revision, demos.revision) == ("exp", "exp")
    hub = LocalHub(hub_dir)
    assert hub.resolve("quickstart/pairs", "exp") == pairs.commit
    assert hub.load_dataset("quickstart/demos", revision="exp", split="train").num_rows >= 5
    for repo in ("quickstart/pairs", "quickstart/demos"):
        assert json.loads((hub.repo_dir(repo) / ".vital" / "repo.json").read_text())["private"] is False
    with pytest.raises(HubError, match="'main' not found"):
        hub.resolve("quickstart/pairs", "main")

    for old in ("revision", "private"):
        config = tmp_path / f"{old}.yaml"
        config.write_text(f"{old}: {'main' if old == 'revision' else 'true'}\n")
        capsys.readouterr()
        with pytest.raises(SystemExit):
            ingest.cli(["--config", str(config), "--hub", f"local:{hub_dir}"])
        new = {"revision": "hub_revision", "private": "hub_private_repo"}[old]
        assert f"in config {config}: key(s) {old} (did you mean {new}?)" in capsys.readouterr().err
