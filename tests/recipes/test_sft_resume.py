"""A killed SFT run resumes to exactly the run it was: at resume the model holds its checkpoint's tensors, and the
loss curve and final weights equal those of an uninterrupted run with the same seed (tiny LLaVA and Idefics3, full
fine-tune and LoRA, the quickstart configs). Before the fix, a LLaVA checkpoint was reloaded without transformers'
key mapping (``language_model.model.*``), so the resumed run trained on from its initial weights."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from safetensors.torch import load_file
from test_sft_recipe import ANSWERS, QUICKSTART, losses, selected_row
from transformers import AutoModelForImageTextToText, TrainerCallback

from vital.data.schemas import SELECTED_FEATURES
from vital.hub import LocalHub
from vital.runner import load_recipe
from vital.runs import FINGERPRINT_FILE
from vital.testing.tiny_models import build_tiny_idefics3, build_tiny_llava


sft = load_recipe("sft")
LORA_TARGETS = {
    "llava": ".*language_model.*\\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
    "idefics3": ".*text_model.*\\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft-resume")
    build_tiny_llava(root / "llava")
    build_tiny_idefics3(root / "idefics3")
    hub = LocalHub(root / "hub")
    rows = [selected_row(i, answer) for i, answer in enumerate(ANSWERS)]
    splits = DatasetDict({"train": Dataset.from_list(rows, features=SELECTED_FEATURES)})
    hub.push_dataset(splits, "t/selected", config_name="top40")
    return SimpleNamespace(root=root, hub=hub)


def run(env, out: Path, model: str, config: str, **overrides) -> None:
    values = {
        "hub": f"local:{env.root / 'hub'}",
        "dataset_name": "t/selected",
        "dataset_config": "top40",
        "model_name_or_path": str(env.root / model),
        "output_dir": str(out),
        "hub_model_id": "t/resume",
        "push_to_hub": "false",
        "max_steps": 4,
        "save_steps": 2,
        **overrides,
    }
    if "lora" in config:
        values["lora_target_modules"] = LORA_TARGETS[model]
    args = ["--config", str(QUICKSTART / config)]
    for key, value in values.items():
        args += [f"--{key}", str(value)]
    sft.cli(args)


class StateAtResume(TrainerCallback):
    """Keeps a copy of the model's tensors when training (re)starts, after the checkpoint was loaded."""

    state: dict[str, torch.Tensor] = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        StateAtResume.state = {k: v.detach().clone() for k, v in model.state_dict().items()}


def probe_resume(monkeypatch) -> None:
    base = sft.SFTRunTrainer

    class Probed(base):
        def __init__(self, *args, **kwargs):
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), StateAtResume()]
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(sft, "SFTRunTrainer", Probed)


def saved_weights(folder: Path) -> dict[str, torch.Tensor]:
    name = "adapter_model.safetensors" if (folder / "adapter_model.safetensors").is_file() else "model.safetensors"
    return load_file(folder / name)


def killed_after(straight: Path, killed: Path, step: int) -> None:
    """What a run killed right after saving ``checkpoint-<step>`` leaves in its output_dir (the fault suite kills a
    run for real): its fingerprint and its checkpoints up to that step."""
    killed.mkdir()
    shutil.copy(straight / FINGERPRINT_FILE, killed / FINGERPRINT_FILE)
    shutil.copytree(straight / f"checkpoint-{step}", killed / f"checkpoint-{step}")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["llava", "idefics3"])
@pytest.mark.parametrize("config", ["sft.yaml", "sft_lora.yaml"])
def test_a_killed_run_resumes_to_the_uninterrupted_run(env, tmp_path, monkeypatch, model, config):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run(env, straight, model, config)
    killed_after(straight, killed, 2)
    probe_resume(monkeypatch)
    run(env, killed, model, config)
    checkpoint = killed / "checkpoint-2"

    # 1. At resume the model holds the checkpoint's tensors, every one.
    at_resume = StateAtResume.state
    if "lora" in config:
        adapter = load_file(checkpoint / "adapter_model.safetensors")
        assert adapter
        for key, tensor in adapter.items():
            live = re.sub(r"\.(lora_[AB])\.weight$", r".\1.default.weight", key)
            assert torch.equal(at_resume[live], tensor), key
        assert any(torch.any(t != 0) for k, t in adapter.items() if "lora_B" in k)  # trained, not the init
    else:
        expected = AutoModelForImageTextToText.from_pretrained(checkpoint).state_dict()
        assert set(expected) == set(at_resume)
        different = [k for k in expected if not torch.equal(expected[k], at_resume[k])]
        assert not different, different[:5]
        base = AutoModelForImageTextToText.from_pretrained(env.root / model).state_dict()
        assert any(not torch.equal(base[k], at_resume[k]) for k in base)  # a trained state, not the base model

    # 2. The loss curve of the killed-and-resumed run is the uninterrupted run's.
    curve = losses(json.loads((killed / "trainer_state.json").read_text()))
    reference = losses(json.loads((straight / "trainer_state.json").read_text()))
    assert len(curve) == len(reference) == 4
    np.testing.assert_allclose(curve, reference, rtol=1e-6, atol=0)

    # 3. So are its final weights.
    final, reference_weights = saved_weights(killed), saved_weights(straight)
    assert final.keys() == reference_weights.keys()
    for key in final:
        torch.testing.assert_close(final[key], reference_weights[key], msg=key)
