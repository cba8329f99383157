"""The README's quickstart end to end: every artifact loads with datasets / transformers, the printed table matches
what is on disk, the lineage ties each artifact to its inputs, and a rerun makes no new commit."""

import json
from pathlib import Path

import pytest
import yaml
from datasets import load_dataset
from transformers import AutoConfig

import vital.selector  # noqa: F401  (registers the selector with the Auto classes)
from vital.hub import LocalHub
from vital.runner import load_recipe


pytestmark = pytest.mark.slow  # the whole quickstart, twice (about a minute)


def test_quickstart_pipeline(tmp_path, capsys, monkeypatch):
    repo = Path(__file__).resolve().parents[2]
    config = yaml.safe_load((repo / "recipes/quickstart/pipeline.yaml").read_text())
    # The same stages and stage YAMLs, run from tmp: the hub, and the outputs/ paths the YAMLs name (journals,
    # checkpoints, reports), land there and never in the checkout.
    stages = [
        f"{name}={repo / 'recipes/quickstart' / path}" for name, path in (s.split("=", 1) for s in config["stages"])
    ]
    monkeypatch.chdir(tmp_path)
    pipeline = tmp_path / "pipeline.yaml"
    assert config["stand_in"] is not None  # the pipeline serves the stand-in endpoint for its API stages
    pipeline.write_text(
        yaml.safe_dump({"hub": f"local:{tmp_path}/hub", "stages": stages, "stand_in": config["stand_in"]})
    )
    monkeypatch.setenv("VITAL_CACHE", str(tmp_path / "cache"))
    recipe = load_recipe("pipeline")
    common = ["--config", str(pipeline), "--report_dir", str(tmp_path / "report")]
    pushed = recipe.cli(common)
    out = capsys.readouterr().out

    hub = LocalHub(tmp_path / "hub")
    artifacts = json.loads((tmp_path / "report" / "artifacts.json").read_text())
    assert {a["repo_id"] for a in artifacts} == {p.repo_id for p in pushed}
    for a in artifacts:
        # The table's commit is what the branch holds now, and the row is in the printed table.
        assert hub.resolve(a["repo_id"], a["revision"], a["repo_type"]) == a["commit"]
        assert a["commit"][:12] in out and a["repo_id"] in out
        snapshot = hub.snapshot(a["repo_id"], a["commit"], a["repo_type"])
        if a["repo_type"] == "dataset":
            card = hub.read_card(a["repo_id"], a["commit"])
            for entry in card.data.to_dict()["configs"]:
                rows = load_dataset(str(snapshot), entry["config_name"], split=entry["data_files"][0]["split"])
                assert len(rows) > 0, (a["repo_id"], entry["config_name"])
        else:
            assert (
                AutoConfig.from_pretrained(snapshot) is not None
                or "vital_selector" in (snapshot / "config.json").read_text()
            )
        for node in a["inputs"]:  # every input the lineage names exists at that commit
            repo, commit = node.split("@")
            kind = "model" if any(b["repo_id"] == repo and b["repo_type"] == "model" for b in artifacts) else "dataset"
            assert hub.resolve(repo, commit, kind) == commit
    assert (tmp_path / "report" / "lineage.png").stat().st_size > 10_000
    assert "flowchart LR" in (tmp_path / "report" / "lineage.md").read_text()
    stages_seen = {a["stage"] for a in artifacts}
    assert {"ingest", "generate", "rate", "train_selector", "select", "sft", "evaluate"} <= stages_seen

    # The hub is a Hugging Face cache: every artifact opens by repo id with plain huggingface_hub / transformers calls.
    from huggingface_hub import scan_cache_dir, snapshot_download
    from transformers import AutoModelForImageTextToText

    assert scan_cache_dir(hub.root).warnings == []
    for a in artifacts:
        kwargs = {"repo_type": a["repo_type"], "cache_dir": hub.root, "local_files_only": True}
        assert Path(snapshot_download(a["repo_id"], revision=a["revision"], **kwargs)).name == a["commit"]
    sft = next(a for a in artifacts if a["stage"] == "sft")
    assert AutoModelForImageTextToText.from_pretrained(
        sft["repo_id"], revision=sft["revision"], cache_dir=hub.root, local_files_only=True
    )

    # Idempotent: the same inputs and configs make no new commits.
    again = recipe.cli(common)
    assert not any(p.created for p in again), [p.repo_id for p in again if p.created]
