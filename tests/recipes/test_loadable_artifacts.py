"""Pushed artifacts open with plain Hugging Face calls: a LoRA adapter names its base by repo id and commit, the
model card's "use" snippet runs as written (against a local hub), and the run's TensorBoard logs go with the model."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset

from vital.cards import Lineage, model_card
from vital.data.schemas import SELECTED_FEATURES
from vital.hub import LocalHub
from vital.runner import load_recipe
from vital.testing.card_snippets import python_blocks, run_on_local_hub
from vital.testing.sft_rows import selected_row
from vital.testing.tiny_models import build_tiny_llava


REPO_ROOT = Path(__file__).resolve().parents[2]
sft = load_recipe("sft")


def _row(i: int) -> dict:
    return selected_row(i, f"Finding number {i}.", question="What is shown?")


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A 3-step LoRA SFT of a tiny LLaVA held by a local hub repo (``hub:t/tiny-llava``), logging to TensorBoard."""
    root = tmp_path_factory.mktemp("loadable")
    hub = LocalHub(root / "hub")
    build_tiny_llava(root / "tiny-llava")
    base = hub.push_folder(root / "tiny-llava", "t/tiny-llava", "model", commit_message="tiny llava")
    hub.push_dataset(Dataset.from_list([_row(i) for i in range(4)], features=SELECTED_FEATURES), "t/sel")
    overrides = {
        "hub": f"local:{root / 'hub'}",
        "model_name_or_path": "hub:t/tiny-llava",
        "dataset_name": "t/sel",
        "dataset_config": "",
        "output_dir": str(root / "out"),
        "hub_model_id": "t/sft-lora",
        "max_steps": "3",
        "save_strategy": "no",
        "report_to": "tensorboard",
    }
    args = ["--config", str(REPO_ROOT / "recipes" / "quickstart" / "sft_lora.yaml")]
    for key, value in overrides.items():
        args += [f"--{key}", value]
    (pushed,) = sft.cli(args)
    return SimpleNamespace(
        hub=hub, base=base, pushed=pushed, snapshot=hub.snapshot("t/sft-lora", pushed.commit, "model")
    )


@pytest.mark.slow
def test_adapter_names_its_base_by_repo_id_and_commit(lora_run):
    config = json.loads((lora_run.snapshot / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "t/tiny-llava"  # not the hub's snapshot folder on this machine
    assert config["revision"] == lora_run.base.commit
    card = (lora_run.snapshot / "README.md").read_text()
    assert str(lora_run.hub.root) not in card.split("lineage:")[0]  # the card's metadata names no local path


@pytest.mark.slow
def test_the_model_cards_use_snippet_runs_as_written(lora_run):
    """The pushed LoRA card's snippet loads the base (by repo id, at its commit) and the adapter (at the run branch)
    with peft and transformers only; the full-fine-tune form of the template loads the model with the image-text
    class."""
    from peft import PeftModel

    (code,) = python_blocks((lora_run.snapshot / "README.md").read_text())
    assert "AutoModel." not in code and "vital" not in code
    ns = run_on_local_hub(code, lora_run.hub, "model")
    assert isinstance(ns["model"], PeftModel)
    assert any(bool(torch.any(w != 0)) for k, w in ns["model"].state_dict().items() if "lora_B" in k)
    assert ns["processor"].apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])

    full = model_card(
        "model",
        lineage=Lineage(stage="sft"),
        model_name="tiny-llava",
        description="",
        repo_id="t/tiny-llava",
        revision="main",
        adapter=False,
    )
    (code,) = python_blocks(str(full))
    ns = run_on_local_hub(code, lora_run.hub, "model")
    assert type(ns["model"]).__name__ == "LlavaForConditionalGeneration"


@pytest.mark.slow
def test_tensorboard_logs_are_pushed_with_the_model(lora_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted(lora_run.snapshot.glob("runs/*/events.out.tfevents.*"))
    assert events, sorted(p.name for p in lora_run.snapshot.iterdir())
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    losses = [e.value for e in accumulator.Scalars("train/loss")]
    state = json.loads((lora_run.snapshot / "trainer_state.json").read_text())
    logged = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert len(losses) == 3 and losses == pytest.approx(logged, rel=1e-5)


def test_paper_configs_log_to_tensorboard():
    """The paper recipes choose their tracker on purpose (and the tracker is one the `tracking` extra installs)."""
    import yaml

    configs = sorted((REPO_ROOT / "recipes" / "biomed_vital" / "sft").glob("*.yaml"))
    configs.append(REPO_ROOT / "recipes" / "biomed_vital" / "train_selector.yaml")
    for path in configs:
        assert yaml.safe_load(path.read_text())["report_to"] == "tensorboard", path
    extras = (REPO_ROOT / "setup.cfg").read_text().split("tracking =")[1].split("\n#")[0]
    assert "tensorboard" in extras and "trackio" in extras


def test_the_tracking_extra_provides_both_trackers():
    """`report_to: trackio` and `report_to: tensorboard` resolve to transformers' callbacks with the extra installed."""
    from transformers.integrations import get_reporting_integration_callbacks

    names = {cls.__name__ for cls in get_reporting_integration_callbacks(["tensorboard", "trackio"])}
    assert names == {"TensorBoardCallback", "TrackioCallback"}


def test_the_selector_folder_carries_its_training_logs(tmp_path):
    """train_selector's saved (and pushed) folder holds the trainer state and TensorBoard's event files."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers import CLIPConfig, CLIPModel, TrainerState

    from vital.selector import SelectorModel

    tiny = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 16},
        projection_dim=8,
    )  # fmt: skip
    model = SelectorModel.from_backbone(CLIPModel(tiny), hidden_sizes=[8])
    out = tmp_path / "out"
    with SummaryWriter(out / "runs" / "run-1") as writer:
        for step, loss in enumerate([0.7, 0.6, 0.5], 1):
            writer.add_scalar("train/loss", loss, step)
    state = TrainerState(global_step=3, log_history=[{"loss": 0.5, "step": 3}])
    trainer = SimpleNamespace(model=model, state=state, args=SimpleNamespace(output_dir=str(out)))
    processor = SimpleNamespace(save_pretrained=lambda folder: None)
    folder = Path(load_recipe("train_selector").save_selector(trainer, processor, str(out / "selector")))
    assert json.loads((folder / "trainer_state.json").read_text())["log_history"] == [{"loss": 0.5, "step": 3}]
    assert list(folder.glob("runs/run-1/events.out.tfevents.*"))
    assert (folder / "modeling_vital_selector.py").is_file()
