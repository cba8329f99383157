"""The train_selector and sweep_clinician_weight recipes end to end on quickstart data in a local hub: a selector that
reloads with AutoModel, a card with its metrics and input commits, training pairs with no candidate on both sides,
and a sweep that prints its table and draws its chart."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

import vital.selector  # noqa: F401  (registers the selector with the Auto classes)
from vital.cards import lineage_of
from vital.hub import LocalHub
from vital.runner import load_recipe
from vital.selector import SelectorModel


pytestmark = pytest.mark.slow  # every test shares a rated hub; each trains a selector


CONFIG = "recipes/quickstart/train_selector.yaml"


def train(root, tmp_path, *extra):
    args = ["--config", CONFIG, "--hub", f"local:{root}/hub", "--output_dir", str(tmp_path / "out")]
    args += ["--max_steps", "15"]
    return load_recipe("train_selector").cli([*args, *extra])


def test_train_selector_end_to_end(rated_hub, tmp_path):
    pairs_push, model_push = train(rated_hub, tmp_path)
    hub = LocalHub(rated_hub / "hub")
    assert (model_push.repo_id, model_push.repo_type) == ("quickstart/selector", "model")

    # The selector reloads with the Auto classes, with its processor, and scores.
    folder = hub.snapshot("quickstart/selector", model_push.commit, "model")
    model = AutoModel.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    assert isinstance(model, SelectorModel) and model.config.hidden_sizes == [64, 64]
    scores = vital.selector.score_texts_images(model, processor, [Image.new("RGB", (40, 40))], ["Q?\nA."])
    assert len(scores) == 1
    # No path of this machine in the pushed files: the backbone is named by its repo id.
    assert (
        json.loads((folder / "config.json").read_text())["backbone_config"]["_name_or_path"] == "quickstart/tiny-clip"
    )
    # (The card, README.md, records the run's arguments as given, `hub: local:<dir>` included.)
    files = [p for p in folder.rglob("*") if p.is_file() and p.name != "README.md"]
    assert len(files) > 3 and [p.name for p in files if str(rated_hub) in p.read_text(errors="ignore")] == []

    # The card: metrics (clinician alignment labelled as measured on training pairs), weight, input commits.
    card = hub.read_card("quickstart/selector", model_push.commit, "model")
    text = card.text
    for metric in ("judge pair accuracy", "AUC", "normalised mean rank", "MAP", "clinician alignment"):
        assert f"| {metric} | " in text
    assert "train, not held out" in text and "weight **100.0**" in text and "Stand-in data" in text
    lineage = lineage_of(card)
    commits = {i.get("repo_id"): i.get("commit") for i in lineage["inputs"]}
    for repo in ("quickstart/candidates", "quickstart/ratings", "quickstart/answer-pairs"):
        assert commits[repo] == hub.resolve(repo) and commits[repo] in text
    assert commits["quickstart/selector-pairs"] == pairs_push.commit
    backbone = next(i for i in lineage["inputs"] if i.get("repo_id") == "quickstart/tiny-clip")
    assert backbone["commit"] == hub.resolve("quickstart/tiny-clip", repo_type="model")
    metrics = lineage["extra"]["metrics"]
    assert 0 <= metrics["judge_accuracy"] <= 1 and 0 <= metrics["clinician_alignment"] <= 1
    assert lineage["extra"]["clinician_weight"] == 100.0

    # The training pairs: train / heldout, judge and clinician, no candidate on both sides.
    pairs = hub.load_dataset("quickstart/selector-pairs", revision=pairs_push.commit)
    assert set(pairs) == {"train", "heldout"}
    train_rows, heldout = pairs["train"], pairs["heldout"]
    assert set(train_rows["source"]) == {"model", "clinician"} and set(heldout["source"]) == {"model"}
    clinician = train_rows.filter(lambda s: s == "clinician", input_columns="source")
    assert len(clinician) == 14 and set(clinician["weight"]) == {100.0}
    assert set(clinician["annotator"]) == {"biomed-vital maintainers (sample; not clinicians)"}

    def candidates_of(split):
        model_rows = split.filter(lambda s: s == "model", input_columns="source")
        return set(model_rows["chosen_id"]) | set(model_rows["rejected_id"])

    assert candidates_of(train_rows) and not candidates_of(train_rows) & candidates_of(heldout)
    assert "Stand-in data" in hub.read_card("quickstart/selector-pairs").text


def test_lora_and_held_out_clinician_pairs(rated_hub, tmp_path):
    # Enough clinician pairs held out (by figure) when the minimum is 1; LoRA on the backbone, merged on save.
    args = ["--use_lora", "true", "--freeze_backbone", "false", "--min_clinician_heldout", "1", "--max_steps", "6"]
    args += ["--hub_model_id", "lora/selector", "--pairs_repo", "lora/selector-pairs"]
    pairs_push, model_push = train(rated_hub, tmp_path, *args)
    hub = LocalHub(rated_hub / "hub")
    model = AutoModel.from_pretrained(hub.snapshot("lora/selector", model_push.commit, "model"))
    assert isinstance(model, SelectorModel) and not any("lora" in n for n, _ in model.named_parameters())
    heldout = hub.load_dataset("lora/selector-pairs", revision=pairs_push.commit, split="heldout")
    train_split = hub.load_dataset("lora/selector-pairs", revision=pairs_push.commit, split="train")
    n_clinician = sum(s == "clinician" for s in heldout["source"])
    assert n_clinician >= 1 and n_clinician + sum(s == "clinician" for s in train_split["source"]) == 14
    card = hub.read_card("lora/selector", model_push.commit, "model")
    assert f"heldout ({n_clinician} pairs)" in card.text and "lora" in card.data.tags


def test_sweep_prints_and_draws(rated_hub, tmp_path, capsys):
    args = ["--config", "recipes/quickstart/sweep_clinician_weight.yaml", "--hub", f"local:{rated_hub}/hub"]
    args += ["--output_dir", str(tmp_path / "sweep")]
    args += ["--weights", "1", "100", "--max_steps", "6", "--results_repo", "test/sweep"]
    # push_models: each selector (and its pairs) to hub_model_id / pairs_repo, branch weight-<w>; TRL's hub names.
    args += ["--push_models", "true", "--hub_model_id", "test/sweep-selector", "--pairs_repo", "test/sweep-pairs"]
    *selectors, pushed = load_recipe("sweep_clinician_weight").cli(args)
    assert [(p.repo_id, p.revision) for p in selectors] == [
        ("test/sweep-pairs", "weight-1"),
        ("test/sweep-selector", "weight-1"),
        ("test/sweep-pairs", "weight-100"),
        ("test/sweep-selector", "weight-100"),
    ]
    assert (pushed.repo_id, pushed.revision) == ("test/sweep", "main")
    out = capsys.readouterr().out
    assert "weight  judge acc  clinician     95% interval     AUC     MAP" in out
    table = [line.split() for line in out.splitlines() if line.strip().startswith(("1 ", "100 "))]
    numbers = [[row[1], row[2], row[3].strip("[,"), row[4].strip("]"), row[5], row[6]] for row in table]
    assert [row[0] for row in table] == ["1", "100"] and all(0 <= float(v) <= 1 for row in numbers for v in row)

    hub = LocalHub(rated_hub / "hub")
    results = hub.load_dataset("test/sweep", revision=pushed.commit, split="train")
    assert results["weight"] == [1.0, 100.0] and all(0 <= a <= 1 for a in results["clinician_alignment"])
    folder = hub.snapshot("test/sweep", pushed.commit)
    with Image.open(folder / "figures" / "clinician_weight_sweep.png") as chart:
        assert chart.format == "PNG"
    card = hub.read_card("test/sweep", pushed.commit).text
    assert "](figures/clinician_weight_sweep.png)" in card and "| 100 |" in card
    weight_100 = lineage_of(hub.read_card("test/sweep-selector", "weight-100", "model"))
    assert weight_100["extra"]["clinician_weight"] == 100.0


def test_clinician_pairs_from_an_export_repo_or_a_file(rated_hub, tmp_path):
    from datasets import concatenate_datasets

    from vital.data.sample_preferences import load_sample_preferences
    from vital.selector.training import load_clinician_preferences

    hub = LocalHub(rated_hub / "hub")
    sample = load_sample_preferences(hub.load_dataset("quickstart/answer-pairs", split="train"))
    model_row = sample.select([0]).map(lambda row: {"id": "judge-0", "source": "model"})
    pushed = hub.push_dataset(concatenate_datasets([sample, model_row]), "clinic/preferences")
    pairs, inputs = load_clinician_preferences(hub, "clinic/preferences@main", weight=5.0)
    assert len(pairs) == len(sample) and set(pairs["weight"]) == {5.0} and "judge-0" not in pairs["id"]
    assert inputs[0].commit == pushed.commit

    Image.new("RGB", (16, 16), "white").save(tmp_path / "figure.png")
    rows = [{"question": "Q?", "chosen": "Good.", "rejected": "Bad.", "image": "figure.png", "annotator": "dr-a"}]
    (tmp_path / "prefs.json").write_text(json.dumps(rows))
    pairs, inputs = load_clinician_preferences(hub, str(tmp_path / "prefs.json"), weight=2.0)
    assert pairs["annotator"] == ["dr-a"] and pairs["weight"] == [2.0] and len(inputs[0]["sha256"]) == 64
    assert load_clinician_preferences(hub, "none") == (None, [])


# -- resume: a killed fit resumes to the uninterrupted one; a changed config never resumes --------------------------
def test_hub_model_id_revision_and_privacy_decide_where_the_selector_lands(rated_hub, tmp_path, caplog):
    """SelectorTrainingConfig's (TRL's) push options, honoured by the hub layer; the trainer never pushes itself."""
    where = ["--hub_model_id", "where/selector", "--pairs_repo", "where/pairs", "--hub_revision", "exp-1"]
    pairs_push, model_push = train(rated_hub, tmp_path, *where, "--hub_private_repo", "false")
    hub = LocalHub(rated_hub / "hub")
    assert (model_push.repo_id, model_push.revision, pairs_push.repo_id, pairs_push.revision) == (
        "where/selector",
        "exp-1",
        "where/pairs",
        "exp-1",
    )
    assert hub.list_refs("where/selector", "model")["branches"]["exp-1"] == model_push.commit
    assert hub.list_refs("where/pairs")["branches"]["exp-1"] == pairs_push.commit

    def private(repo, repo_type):
        return json.loads((hub.repo_dir(repo, repo_type) / ".vital" / "repo.json").read_text())["private"]

    assert private("where/selector", "model") is False and private("where/pairs", "dataset") is False
    training = lineage_of(hub.read_card("where/selector", "exp-1", "model"))["config"]["training"]
    assert (training["hub_model_id"], training["hub_revision"], training["push_to_hub"]) == (
        "where/selector",
        "exp-1",
        True,
    )
    # hub_private_repo true (the quickstart's): private repos.
    train(rated_hub, tmp_path / "b", "--hub_model_id", "private/selector", "--pairs_repo", "private/pairs")
    assert private("private/selector", "model") is True and private("private/pairs", "dataset") is True
    # push_to_hub false: nothing on the hub, and the log says so and where the selector is.
    caplog.set_level(logging.INFO)
    assert train(rated_hub, tmp_path / "c", "--hub_model_id", "none/selector", "--push_to_hub", "false") == []
    said = [r.getMessage() for r in caplog.records if "nothing was pushed" in r.getMessage()]
    assert said == [
        f"push_to_hub is false: nothing was pushed to none/selector; the selector is in {tmp_path / 'c/out/selector'}"
    ]
    assert not hub.repo_dir("none/selector", "model").exists()


def fit(root, out, *extra, probe=None, monkeypatch=None):
    """The quickstart selector fit, checkpointing every 4 of 8 steps, logging every step, not pushed."""
    recipe = load_recipe("train_selector")
    if probe is not None:
        original = recipe.fit_selector

        def probed(*args, callbacks=None, **kwargs):
            return original(*args, callbacks=[*(callbacks or []), probe], **kwargs)

        monkeypatch.setattr(recipe, "fit_selector", probed)
    args = ["--config", CONFIG, "--hub", f"local:{root}/hub", "--output_dir", str(out), "--push_to_hub", "false"]
    args += ["--max_steps", "8", "--save_strategy", "steps", "--save_steps", "4", "--logging_steps", "1", *extra]
    recipe.cli(args)


def selector_losses(checkpoint) -> list[float]:
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [[], ["--freeze_backbone", "false"], ["--use_lora", "true", "--freeze_backbone", "false"]],
    ids=["head", "full", "lora"],
)
def test_a_killed_selector_fit_resumes_to_the_uninterrupted_fit(rated_hub, tmp_path, monkeypatch, extra):
    import shutil

    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from vital.runs import FINGERPRINT_FILE

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    fit(rated_hub, straight, *extra)
    # What a fit killed right after saving checkpoint-4 leaves: its fingerprint and that checkpoint.
    killed.mkdir()
    shutil.copy(straight / FINGERPRINT_FILE, killed / FINGERPRINT_FILE)
    shutil.copytree(straight / "checkpoint-4", killed / "checkpoint-4")

    seen = {}

    class AtResume(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            seen.update({k: v.detach().clone() for k, v in model.state_dict().items()})

    fit(rated_hub, killed, *extra, probe=AtResume(), monkeypatch=monkeypatch)
    checkpoint = killed / "checkpoint-4"
    if "--use_lora" in extra:
        saved = load_file(checkpoint / "adapter_model.safetensors")
        live = {k.replace(".modules_to_save.default", "").replace(".default", ""): v for k, v in seen.items()}
        assert saved and all(torch.equal(live[k], v) for k, v in saved.items())
    else:
        saved = AutoModel.from_pretrained(checkpoint).state_dict()
        assert saved.keys() == seen.keys() and all(torch.equal(saved[k], seen[k]) for k in saved)
    import numpy as np

    np.testing.assert_allclose(
        selector_losses(killed / "checkpoint-8"), selector_losses(straight / "checkpoint-8"), rtol=1e-6, atol=0
    )
    final, reference = (
        load_file(killed / "selector" / "model.safetensors"),
        load_file(straight / "selector" / "model.safetensors"),
    )
    assert final.keys() == reference.keys()
    for key in final:
        torch.testing.assert_close(final[key], reference[key], msg=key)


@pytest.mark.slow
def test_a_selector_fit_with_another_config_never_resumes_the_old_checkpoint(rated_hub, tmp_path):
    from vital.runs import read_fingerprint

    out = tmp_path / "out"
    fit(rated_hub, out)
    first = selector_losses(out / "checkpoint-8")
    fit(rated_hub, out, "--learning_rate", "5e-3")
    second = selector_losses(out / "checkpoint-8")
    assert len(second) == 8 and second[0] == first[0] and second[1:] != first[1:]  # trained afresh, its own curve
    (aside,) = tmp_path.glob("out.superseded-*")
    assert selector_losses(aside / "checkpoint-8") == first
    assert read_fingerprint(out)["config"]["training"]["learning_rate"] == 5e-3


def test_an_unchanged_rerun_skips_the_fit_and_a_changed_one_fits(rated_hub, tmp_path, monkeypatch):
    repos = ["--hub_model_id", "skip/selector", "--pairs_repo", "skip/selector-pairs"]
    pairs, model = train(rated_hub, tmp_path, *repos)
    recipe = load_recipe("train_selector")
    fits = []
    original = recipe.fit_selector

    def counting(*args, **kwargs):
        fits.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(recipe, "fit_selector", counting)
    again = train(rated_hub, tmp_path, *repos)
    assert fits == []  # nothing trained
    assert [(p.repo_id, p.commit) for p in again] == [(pairs.repo_id, pairs.commit), (model.repo_id, model.commit)]
    assert not any(p.created for p in again)

    changed = train(rated_hub, tmp_path, *repos, "--learning_rate", "5e-3")
    assert fits == [1] and changed[1].commit != model.commit
