"""A rerun with a changed config never ships the base model: checkpoints are resumed only by the run they belong to
(run fingerprint), a push of base weights after training is refused, and the card's figures come from the run that
made the weights. Before the fix, rerunning the quickstart SFT with another learning rate resumed the finished run's
last checkpoint, trained 0 steps and pushed the untrained model under a card with the old run's loss."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset, DatasetDict
from safetensors.torch import load_file
from test_sft_recipe import ANSWERS, QUICKSTART, losses, selected_row

from vital.cards import lineage_of
from vital.data.schemas import SELECTED_FEATURES
from vital.hub import LocalHub
from vital.runner import load_recipe
from vital.runs import FINGERPRINT_FILE, BaseWeightsError, StaleCheckpointError, read_fingerprint
from vital.sft import finished_run
from vital.testing.tiny_models import build_tiny_llava


sft = load_recipe("sft")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft-rerun")
    build_tiny_llava(root / "llava")
    hub = LocalHub(root / "hub")
    rows = [selected_row(i, answer) for i, answer in enumerate(ANSWERS)]
    hub.push_dataset(
        DatasetDict({"train": Dataset.from_list(rows, features=SELECTED_FEATURES)}), "t/sel", config_name="top40"
    )
    return SimpleNamespace(root=root, hub=hub, llava=root / "llava")


def cli(env, out: Path, repo: str, config: str = "sft.yaml", **overrides):
    values = {
        "hub": f"local:{env.root / 'hub'}",
        "dataset_name": "t/sel",
        "dataset_config": "top40",
        "model_name_or_path": str(env.llava),
        "output_dir": str(out),
        "hub_model_id": repo,
        "max_steps": 4,
        "save_steps": 2,
        **overrides,
    }
    args = ["--config", str(QUICKSTART / config)]
    for key, value in values.items():
        args += [f"--{key}", str(value)]
    return sft.cli(args)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_rerun_with_another_learning_rate_trains_afresh_and_its_card_is_its_own(env, tmp_path):
    out = tmp_path / "out"
    (first,) = cli(env, out, "t/lr")
    first_state = json.loads((out / "trainer_state.json").read_text())

    (second,) = cli(env, out, "t/lr", learning_rate="5e-4")
    assert second.commit != first.commit
    snapshot = env.hub.snapshot("t/lr", second.commit, "model")
    base = weights(env.llava)
    assert not equal(weights(snapshot), base)  # trained, not the base model
    assert not equal(weights(snapshot), weights(env.hub.snapshot("t/lr", first.commit, "model")))

    # The second run trained its own 4 steps from the base model: same first loss, then its own curve.
    state = json.loads((snapshot / "trainer_state.json").read_text())
    curve = losses(state)
    assert state["global_step"] == 4 and len(curve) == 4
    assert curve[0] == losses(first_state)[0] and curve[1:] != losses(first_state)[1:]

    # Every figure on the card is this run's.
    card = env.hub.read_card("t/lr", second.commit, "model")
    lineage = lineage_of(card)
    assert lineage["config"]["training"]["learning_rate"] == 5e-4
    extra = lineage["extra"]
    assert extra["resumed_from"] is None and extra["metrics"]["train_steps"] == 4
    assert extra["metrics"]["final_loss"] == pytest.approx(curve[-1], rel=1e-5)
    assert f"{curve[-1]:.4g}" in card.text and f"{losses(first_state)[-1]:.4g}" not in card.text
    assert extra["run_fingerprint"] == read_fingerprint(out)["sha256"]

    # The first run's output was moved aside, whole, not mixed into the second.
    (aside,) = tmp_path.glob("out.superseded-*")
    assert (
        read_fingerprint(aside)["sha256"]
        == lineage_of(env.hub.read_card("t/lr", first.commit, "model"))["extra"]["run_fingerprint"]
    )
    assert {p.name for p in aside.glob("checkpoint-*")} == {"checkpoint-2", "checkpoint-4"}


@pytest.mark.slow
def test_an_unchanged_rerun_resumes_its_own_checkpoint(env, tmp_path):
    out = tmp_path / "out"
    cli(env, out, "t/same", push_to_hub="false")
    # The same run again (push on: not part of the fingerprint): it resumes its own last checkpoint, 0 steps to go.
    (pushed,) = cli(env, out, "t/same")
    snapshot = env.hub.snapshot("t/same", pushed.commit, "model")
    assert equal(weights(snapshot), weights(out / "checkpoint-4"))
    card = env.hub.read_card("t/same", pushed.commit, "model")
    extra = lineage_of(card)["extra"]
    assert extra["resumed_from"] == "checkpoint-4" and extra["metrics"]["train_steps"] == 4
    assert "resumed from its own `checkpoint-4`" in card.text and "## What was verified" in card.text
    assert not list(tmp_path.glob("out.superseded-*"))


@pytest.mark.slow
@pytest.mark.parametrize("config", ["sft.yaml", "sft_lora.yaml"])
def test_a_push_of_base_weights_after_training_is_refused(env, tmp_path, config):
    # A learning rate of 0 trains 4 steps that change nothing: the weights are the base model's.
    with pytest.raises(BaseWeightsError, match="refusing to push .* 4 step"):
        cli(env, tmp_path / "out", f"t/zero-{config[:-5]}", config=config, learning_rate="0")
    assert (
        finished_run(env.hub, f"t/zero-{config[:-5]}", "quickstart-lora" if "lora" in config else "quickstart") is None
    )


@pytest.mark.slow
def test_a_checkpoint_of_another_run_named_by_path_is_refused(env, tmp_path):
    cli(env, tmp_path / "a", "t/other", push_to_hub="false", max_steps=2)
    with pytest.raises(StaleCheckpointError, match=r"belongs to another run .*config\.training\.learning_rate"):
        cli(
            env,
            tmp_path / "b",
            "t/other",
            push_to_hub="false",
            max_steps=2,
            learning_rate="5e-4",
            resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-2"),
        )
    assert (tmp_path / "a" / "checkpoint-2" / FINGERPRINT_FILE).is_file()


@pytest.mark.slow
def test_the_chat_template_file_is_an_input_fingerprinted_by_its_content(env, tmp_path):
    """A `chat_template_path` file is read (TRL reads .jinja files) and recorded as an input by its sha256: an unchanged
    rerun is the same run (no new commit), an edited template is a new run, whatever the file is called."""
    from vital.tiny_models import LLAVA_CHAT_TEMPLATE

    template = tmp_path / "chat.jinja"
    template.write_text(LLAVA_CHAT_TEMPLATE, encoding="utf-8")
    (first,) = cli(env, tmp_path / "a", "t/template", chat_template_path=template)
    (record,) = [i for i in lineage_of(env.hub.read_card("t/template", first.commit, "model"))["inputs"]
                 if i.get("repo_type") == "chat_template"]  # fmt: skip
    assert record == {"source": str(template), "repo_type": "chat_template", "sha256": sha256_text(template)}

    (again,) = cli(env, tmp_path / "a", "t/template", chat_template_path=template)
    assert again.commit == first.commit  # the same run: nothing trained, nothing pushed

    template.write_text(LLAVA_CHAT_TEMPLATE + "{#- edited: a new run -#}", encoding="utf-8")
    (edited,) = cli(env, tmp_path / "a", "t/template", chat_template_path=template)
    assert edited.commit != first.commit
    # A new run fingerprint: the first run's output_dir was moved aside, not resumed.
    assert len(list(tmp_path.glob("a.superseded-*"))) == 1
    inputs = lineage_of(env.hub.read_card("t/template", edited.commit, "model"))["inputs"]
    assert {"source": str(template), "repo_type": "chat_template", "sha256": sha256_text(template)} in inputs


def test_a_shipped_chat_template_is_found_from_any_folder(tmp_path, monkeypatch):
    """The paper configs name `recipes/biomed_vital/sft/llava15_training.jinja`: from a folder without it, the copy
    shipped with the package is read (TRL would otherwise take the path for a model id to download)."""
    from vital.resources import resource_dir
    from vital.sft import chat_template_input

    monkeypatch.chdir(tmp_path)
    name = "recipes/biomed_vital/sft/llava15_training.jinja"
    record, found = chat_template_input(name)
    shipped = resource_dir("recipes") / "biomed_vital" / "sft" / "llava15_training.jinja"
    assert Path(found) == shipped and record["source"] == name and record["sha256"] == sha256_text(shipped)
    assert chat_template_input(None) == chat_template_input("llava-hf/llava-1.5-7b-hf") == (None, None)
    with pytest.raises(FileNotFoundError, match="chat_template_path 'missing.jinja'"):
        chat_template_input("missing.jinja")


def sha256_text(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
