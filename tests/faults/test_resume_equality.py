"""Fault suite: SIGKILL a tuning run right after it saved a checkpoint, rerun it, and get the uninterrupted run.

The killed run's rerun must (1) find its own checkpoint (run fingerprint), (2) hold the checkpoint's tensors, every
one, when training starts again, and (3) end with the loss curve and the weights of a run that was never killed (same
seed, tiny LLaVA, quickstart config). Before the fix the rerun trained on from the initial weights: LLaVA checkpoints
are saved under their original key names (``language_model.model.*``) and the Trainer reloaded them without mapping.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText

from vital.data.schemas import SELECTED_FEATURES
from vital.hub import LocalHub
from vital.runs import FINGERPRINT_FILE
from vital.testing.sft_rows import selected_row
from vital.testing.tiny_models import build_tiny_llava


ROOT = Path(__file__).resolve().parents[2]
# The recipe, with the model's tensors written out when training (re)starts (after any checkpoint was loaded).
DRIVER = """
import sys
from safetensors.torch import save_file
from transformers import TrainerCallback
from vital.runner import load_recipe

sft = load_recipe("sft")
dump = sys.argv[1]

class AtStart(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, dump)

class Probed(sft.SFTRunTrainer):
    def __init__(self, *a, **k):
        k["callbacks"] = [*(k.get("callbacks") or []), AtStart()]
        super().__init__(*a, **k)

sft.SFTRunTrainer = Probed
sft.cli(sys.argv[2:])
"""
ANSWERS = ["The CT scan shows a small nodule.", "There is a left pleural effusion.", "No acute abnormality."] * 2


def row(i: int, answer: str) -> dict:
    return selected_row(i, answer, question="What is shown?")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume-equality")
    build_tiny_llava(root / "llava")
    rows = [row(i, answer) for i, answer in enumerate(ANSWERS)]
    LocalHub(root / "hub").push_dataset(
        DatasetDict({"train": Dataset.from_list(rows, features=SELECTED_FEATURES)}), "t/sel", config_name="top40"
    )
    return root


def command(root: Path, out: Path, dump: Path) -> list[str]:
    values = {
        "hub": f"local:{root / 'hub'}",
        "dataset_name": "t/sel",
        "dataset_config": "top40",
        "model_name_or_path": str(root / "llava"),
        "output_dir": str(out),
        "hub_model_id": "t/resume",
        "push_to_hub": "false",
        "max_steps": 8,
        "save_steps": 2,
        "save_total_limit": 10,
    }
    args = ["--config", str(ROOT / "recipes" / "quickstart" / "sft.yaml")]
    for key, value in values.items():
        args += [f"--{key}", str(value)]
    return [sys.executable, "-c", DRIVER, str(dump), *args]


ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def losses(out: Path) -> list[float]:
    return [e["loss"] for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]


@pytest.mark.slow
def test_a_run_killed_after_a_checkpoint_resumes_to_the_uninterrupted_run(setup, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    done = subprocess.run(
        command(setup, straight, tmp_path / "straight.safetensors"), env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]

    # SIGKILL as soon as checkpoint-2 is saved to the end (its fingerprint is written after trainer_state.json).
    proc = subprocess.Popen(
        command(setup, killed, tmp_path / "first.safetensors"),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if (killed / "checkpoint-2" / FINGERPRINT_FILE).is_file():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "trainer_state.json").exists()  # killed mid-run: no final save

    rerun = subprocess.run(
        command(setup, killed, tmp_path / "resumed.safetensors"), env=ENV, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    resumed_from = [line for line in rerun.stdout.splitlines() if "resuming this run from" in line]
    assert resumed_from, rerun.stdout[-2000:]
    checkpoint = Path(resumed_from[0].rsplit(" ", 1)[-1])
    assert checkpoint.parent == killed and int(checkpoint.name.split("-")[1]) >= 2

    # Tensor equality: at restart the model holds the checkpoint's tensors, every one (not the initial weights).
    at_restart = load_file(tmp_path / "resumed.safetensors")
    expected = AutoModelForImageTextToText.from_pretrained(checkpoint).state_dict()
    initial = load_file(tmp_path / "straight.safetensors")
    assert expected.keys() == at_restart.keys()
    assert all(torch.equal(expected[k], at_restart[k]) for k in expected), "the checkpoint was not restored"
    assert not all(torch.equal(initial[k], at_restart[k]) for k in initial)

    # Loss curve and final weights equal those of the run that was never killed.
    np.testing.assert_allclose(losses(killed), losses(straight), rtol=1e-6, atol=0)
    final, reference = load_file(killed / "model.safetensors"), load_file(straight / "model.safetensors")
    assert final.keys() == reference.keys()
    for key in final:
        torch.testing.assert_close(final[key], reference[key], msg=key)
