"""The selector trainer under `accelerate launch` with two CPU processes (gloo): trains, and pushes once."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vital.cards import lineage_of
from vital.hub import LocalHub
from vital.runner import load_recipe


pytestmark = pytest.mark.slow  # a pipeline, then two DDP processes (about 30 s)

ROOT = Path(__file__).resolve().parents[2]


def test_two_processes_train_and_push_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the stage YAMLs' outputs/ paths (journals) land here, not in the checkout
    hub_spec = f"local:{tmp_path}/hub"
    stages = ["ingest", "tiny_models", "curate_demos", "generate", "rate"]
    config = tmp_path / "pipeline.yaml"
    lines = [f"hub: {hub_spec}", "stand_in: true", "stages:"]  # the pipeline serves the stand-in endpoint
    lines += [f"  - {s}={ROOT}/recipes/quickstart/{s}.yaml" for s in stages]
    config.write_text("\n".join(lines) + "\n")
    load_recipe("pipeline").cli(["--config", str(config), "--report_dir", str(tmp_path / "report")])

    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--config_file", str(ROOT / "accelerate_configs/cpu.yaml")]
    cmd += [str(ROOT / "recipes/train_selector.py"), "--config", str(ROOT / "recipes/quickstart/train_selector.yaml")]
    cmd += ["--hub", hub_spec, "--output_dir", str(tmp_path / "selector"), "--max_steps", "10"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[rank1]" in proc.stderr  # a second DDP rank really ran (its reducer speaks up)

    hub = LocalHub(tmp_path / "hub")
    history = hub.history("quickstart/selector", repo_type="model")
    assert len(history) == 1  # one push, from the main process only
    card = hub.read_card("quickstart/selector", repo_type="model")
    assert lineage_of(card)["stage"] == "train_selector"
