"""The train_selector and sweep_clinician_weight recipes end to end on quickstart data in a local hub: a selector that
reloads with AutoModel, a card with its metrics and input commits, training pairs with no candidate on both sides,
and a sweep that prints its table and draws its chart."""

from __future__ import annotations

import json

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


@pytest.fixture(scope="module")
def rated_hub(tmp_path_factory):
    """Quickstart pairs, tiny models, candidates, answer pairs and ratings from the stand-in (no faults, no latency)."""
    root = tmp_path_factory.mktemp("train-selector")
    hub = f"local:{root}/hub"
    fast = ["--stand_in_faults", "0", "--stand_in_latency_ms", "0"]
    load_recipe("ingest").cli(["--config", "recipes/quickstart/ingest.yaml", "--hub", hub])
    load_recipe("tiny_models").cli(["--config", "recipes/quickstart/tiny_models.yaml", "--hub", hub])
    load_recipe("generate").cli(
        ["--config", "recipes/quickstart/generate.yaml", "--hub", hub, "--journal_dir", f"{root}/gen", *fast]
    )
    load_recipe("rate").cli(
        ["--config", "recipes/quickstart/rate.yaml", "--hub", hub, "--journal_dir", f"{root}/r", *fast]
    )
    return root


@pytest.fixture(autouse=True)
def restore_threads():
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


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
    args += ["--output_repo", "lora/selector", "--pairs_repo", "lora/selector-pairs"]
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
    (pushed,) = load_recipe("sweep_clinician_weight").cli(args)
    out = capsys.readouterr().out
    assert "weight  judge acc  clinician     AUC" in out
    table = [line.split() for line in out.splitlines() if line.strip().startswith(("1 ", "100 "))]
    assert [row[0] for row in table] == ["1", "100"] and all(0 <= float(v) <= 1 for row in table for v in row[1:])

    hub = LocalHub(rated_hub / "hub")
    results = hub.load_dataset("test/sweep", revision=pushed.commit, split="train")
    assert results["weight"] == [1.0, 100.0] and all(0 <= a <= 1 for a in results["clinician_alignment"])
    folder = hub.snapshot("test/sweep", pushed.commit)
    with Image.open(folder / "figures" / "clinician_weight_sweep.png") as chart:
        assert chart.format == "PNG"
    card = hub.read_card("test/sweep", pushed.commit).text
    assert "](figures/clinician_weight_sweep.png)" in card and "| 100 |" in card


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
