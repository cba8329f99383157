"""The API stages under `accelerate launch` on a machine without a GPU (accelerate_configs/cpu.yaml): the two
processes split the requests, share one rate budget and push once. accelerate sees torchrun's processes on a CPU as
one run only when asked for the CPU; otherwise each was "process 0 of 1", sent every request and pushed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vital.hub import LocalHub
from vital.runner import load_recipe


def launch(recipe: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path.cwd()), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/cpu.yaml"]
    return subprocess.run([*command, recipe, *args], env=env, capture_output=True, text=True, timeout=300)


def keys(folder: Path) -> list[str]:
    return [json.loads(line)["key"] for path in sorted(folder.glob("journal*.jsonl")) for line in path.open()]


@pytest.mark.slow
def test_generate_and_rate_under_accelerate_launch_on_cpu(tmp_path, stand_in):
    hub_dir = tmp_path / "hub"
    load_recipe("ingest").cli(["--config", "recipes/quickstart/ingest.yaml", "--hub", f"local:{hub_dir}"])
    server = [*stand_in(faults=0), "--requests_per_minute", "60000"]
    stats = stand_in.servers[0].stats
    hub = LocalHub(hub_dir)
    for recipe, config, repos in (
        (
            "recipes/generate.py",
            "recipes/quickstart/generate.yaml",
            ["quickstart/candidates", "quickstart/answer-pairs"],
        ),
        ("recipes/rate.py", "recipes/quickstart/rate.yaml", ["quickstart/ratings"]),
    ):
        journals = tmp_path / Path(recipe).stem
        before = stats.requests
        done = launch(recipe, "--config", config, "--hub", f"local:{hub_dir}", "--journal_dir", str(journals), *server)
        assert done.returncode == 0, done.stderr[-3000:]
        # Each process sent its own share, into its own journal: every request once, none twice.
        files = sorted(p.name for p in journals.glob("journal*.jsonl"))
        assert files == ["journal-00000-of-00002.jsonl", "journal-00001-of-00002.jsonl"], files
        sent = keys(journals)
        assert len(sent) == len(set(sent)) == stats.requests - before
        assert all(sum(1 for _ in (journals / name).open()) for name in files)  # both processes sent some
        for repo in repos:  # pushed once, by the main process, and the card says how the budget was shared
            assert len(hub.history(repo)) == 1, repo
            card = (hub.snapshot(repo) / "README.md").read_text()
            assert "the 2 processes of a machine shared one budget" in card, repo
    assert len(hub.load_dataset("quickstart/candidates", split="train")) == 15


def test_a_launch_that_accelerate_would_see_as_lone_processes_is_refused(monkeypatch):
    import accelerate

    from vital.runner import process_state

    class LoneState:  # what PartialState() reports for each torchrun process on a CPU without cpu=True
        num_processes, distributed_type = 1, "NO"

        def __init__(self, cpu: bool = False):
            pass

    monkeypatch.setattr(accelerate, "PartialState", LoneState)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="the launcher started 2 processes but accelerate sees 1"):
        process_state()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert process_state().num_processes == 1
