"""A killed SFT run of the tiny Qwen2-VL resumes to exactly the run it was (full fine-tune and LoRA): at resume the
model holds its checkpoint's tensors, and the loss curve and final weights equal an uninterrupted run's. Qwen2-VL
checkpoints are saved under their original key names (``model.layers.*``, ``visual.*``), which the Trainer reloaded
without mapping. Needs torchvision: ``make test-torchvision`` runs this file in the second virtual environment."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest


pytest.importorskip("torchvision")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset, DatasetDict  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForImageTextToText, TrainerCallback  # noqa: E402

from vital.data.schemas import SELECTED_FEATURES  # noqa: E402
from vital.hub import LocalHub  # noqa: E402
from vital.runner import load_recipe  # noqa: E402
from vital.runs import FINGERPRINT_FILE  # noqa: E402
from vital.testing.sft_rows import selected_row  # noqa: E402
from vital.testing.tiny_models import build_tiny_qwen2_vl  # noqa: E402


QUICKSTART = Path(__file__).resolve().parents[2] / "recipes" / "quickstart"
ANSWERS = ["The CT scan shows a small nodule.", "There is a left pleural effusion.", "No acute abnormality."] * 2
sft = load_recipe("sft")


def _row(i: int, answer: str) -> dict:
    return selected_row(i, answer, question="What is it?")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen2-vl-resume")
    build_tiny_qwen2_vl(root / "qwen2-vl")
    rows = [_row(i, answer) for i, answer in enumerate(ANSWERS)]
    LocalHub(root / "hub").push_dataset(
        DatasetDict({"train": Dataset.from_list(rows, features=SELECTED_FEATURES)}), "t/sel", config_name="top40"
    )
    return root


class StateAtResume(TrainerCallback):
    state: dict = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        StateAtResume.state = {k: v.detach().clone() for k, v in model.state_dict().items()}


def run(root: Path, out: Path, config: str) -> None:
    values = {
        "hub": f"local:{root / 'hub'}",
        "dataset_name": "t/sel",
        "dataset_config": "top40",
        "model_name_or_path": str(root / "qwen2-vl"),
        "output_dir": str(out),
        "hub_model_id": "t/qwen-resume",
        "push_to_hub": "false",
        "max_steps": 4,
        "save_steps": 2,
    }
    if "lora" in config:
        values["lora_target_modules"] = ".*language_model.*\\.(q_proj|v_proj)"
    args = ["--config", str(QUICKSTART / config)]
    for key, value in values.items():
        args += [f"--{key}", str(value)]
    sft.cli(args)


def losses(out: Path) -> list[float]:
    return [e["loss"] for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]


@pytest.mark.slow
@pytest.mark.parametrize("config", ["sft.yaml", "sft_lora.yaml"])
def test_a_killed_qwen2_vl_run_resumes_to_the_uninterrupted_run(root, tmp_path, monkeypatch, config):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run(root, straight, config)
    # What a run killed right after saving checkpoint-2 leaves: its fingerprint and that checkpoint.
    killed.mkdir()
    shutil.copy(straight / FINGERPRINT_FILE, killed / FINGERPRINT_FILE)
    shutil.copytree(straight / "checkpoint-2", killed / "checkpoint-2")

    class Probed(sft.SFTRunTrainer):
        def __init__(self, *args, **kwargs):
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), StateAtResume()]
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(sft, "SFTRunTrainer", Probed)
    run(root, killed, config)

    at_resume, checkpoint = StateAtResume.state, killed / "checkpoint-2"
    if "lora" in config:
        adapter = load_file(checkpoint / "adapter_model.safetensors")
        for key, tensor in adapter.items():
            assert torch.equal(at_resume[re.sub(r"\.(lora_[AB])\.weight$", r".\1.default.weight", key)], tensor), key
        name = "adapter_model.safetensors"
    else:
        expected = AutoModelForImageTextToText.from_pretrained(checkpoint).state_dict()
        assert set(expected) == set(at_resume)
        different = [k for k in expected if not torch.equal(expected[k], at_resume[k])]
        assert not different, different[:5]
        name = "model.safetensors"

    np.testing.assert_allclose(losses(killed), losses(straight), rtol=1e-6, atol=0)
    final, reference = load_file(killed / name), load_file(straight / name)
    assert final.keys() == reference.keys()
    for key in final:
        torch.testing.assert_close(final[key], reference[key], msg=key)
