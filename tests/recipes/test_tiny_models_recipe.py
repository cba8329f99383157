"""The offline base models stage: tiny random models pushed as hub model repos that transformers loads."""

import pytest
from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor

from vital.cards import lineage_of
from vital.hub import LocalHub
from vital.runner import load_recipe


def test_tiny_models_are_hub_repos(tmp_path):
    recipe = load_recipe("tiny_models")
    args = ["--config", "recipes/quickstart/tiny_models.yaml", "--hub", f"local:{tmp_path}/hub"]
    vlm, clip = recipe.cli(args)
    hub = LocalHub(tmp_path / "hub")
    folder = hub.snapshot("quickstart/tiny-llava", vlm.commit, "model")
    model = AutoModelForImageTextToText.from_pretrained(folder)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert AutoProcessor.from_pretrained(folder).chat_template
    assert (
        type(AutoModel.from_pretrained(hub.snapshot("quickstart/tiny-clip", clip.commit, "model"))).__name__
        == "CLIPModel"
    )
    card = hub.read_card("quickstart/tiny-llava", repo_type="model")
    assert "random-weights" in card.data.tags and lineage_of(card)["seed"] == 0
    again = recipe.cli(args)  # same seed, same bytes: no new commit
    assert [p.commit for p in again] == [vlm.commit, clip.commit] and not any(p.created for p in again)


def test_push_to_hub_false_builds_and_pushes_nothing_and_old_names_are_refused(tmp_path, capsys):
    recipe = load_recipe("tiny_models")
    args = ["--config", "recipes/quickstart/tiny_models.yaml", "--hub", f"local:{tmp_path}/hub"]
    assert recipe.cli([*args, "--push_to_hub", "false"]) == []
    assert not (tmp_path / "hub").exists() or not any((tmp_path / "hub").rglob("config.json"))
    for old in ("--revision", "--private"):  # renamed to hub_revision / hub_private_repo (HubArguments)
        with pytest.raises(SystemExit):
            recipe.cli([*args, old, "main"])
        assert f"unknown arguments: {old}" in capsys.readouterr().err
