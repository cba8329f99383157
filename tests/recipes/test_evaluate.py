"""The evaluation stage end to end on tiny fixtures, a tiny LLaVA and the stand-in judge: the eval dataset, the
model-index entries in the model's card, the win rate against another eval dataset and the comparison chart."""

import json
import re
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from vital.cards import lineage_of
from vital.hub import LocalHub
from vital.runner import load_recipe
from vital.testing.serve import running_stand_in, stage_args
from vital.testing.tiny_models import build_tiny_llava


pytestmark = pytest.mark.slow  # every test shares a tiny evaluation run (about 30 s), one adds a hub model (1 min)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    build_tiny_llava(root / "tiny-llava", seed=0)
    build_tiny_llava(root / "tiny-llava-b", seed=1)
    hub = LocalHub(root / "hub")
    card = ModelCard("---\nlicense: other\nlineage:\n  stage: sft\n---\n\n# tiny-llava-b\n")
    hub.push_folder(root / "tiny-llava-b", "quickstart/tiny-llava-b", "model", card=card)
    return root


JUDGE: list = []  # the stand-in judge of this module's runs


@pytest.fixture(scope="module", autouse=True)
def judge():
    with running_stand_in(faults=0.05, latency_ms=5) as server:
        JUDGE[:] = [server]
        yield server


def evaluate(root, *extra):
    args = ["--config", "recipes/quickstart/evaluate.yaml", "--hub", f"local:{root}/hub", "--cache_dir",
            str(root / "cache"), *stage_args(JUDGE[0])]  # fmt: skip
    return load_recipe("evaluate").cli([*args, *extra])


def journal_lines(folder):
    return sum(len(p.read_text().splitlines()) for p in Path(folder).rglob("*.jsonl"))


@pytest.fixture(scope="module")
def first(root):
    """The quickstart as configured, on a model folder."""
    out = root / "out-a"
    return evaluate(root, "--model_name_or_path", str(root / "tiny-llava"), "--output_dir", str(out)), out


def test_quickstart_on_a_model_folder_pushes_the_eval_dataset(root, first):
    (pushed,), out = first
    hub = LocalHub(root / "hub")
    snapshot = hub.snapshot("quickstart/eval", pushed.commit)
    for name in ("vqa-rad", "slake", "path-vqa"):
        rows = hub.load_dataset("quickstart/eval", name, revision=pushed.commit, split="test")
        assert len(rows) == 6 and all(isinstance(p, str) for p in rows["prediction"])
        assert set(rows["answer_type"]) == {"open", "closed"}
        assert all(0 <= s <= 1 for s in [*rows["legacy_score"], *rows["strict_score"]])
    chat = hub.load_dataset("quickstart/eval", "chat", revision=pushed.commit, split="test")
    assert len(chat) == 4 and all(r["judge_raw"] for r in chat)
    for r in chat:  # a verdict is either read (both scores) or recorded as unreadable (no score at all)
        assert (r["score_model"] is None) == (r["judge_error"] is not None) == (r["score_reference"] is None)
    summary = hub.load_dataset("quickstart/eval", "summary", revision=pushed.commit, split="test")
    excluded = sum(r["judge_error"] is not None for r in chat)
    chat_all = [r for r in summary if r["task"] == "chat" and r["group"] == "" and r["metric"] == "mean_of_ratios"]
    assert chat_all[0]["n"] == 4 - excluded
    assert {(r["benchmark"], r["mode"]) for r in summary if r["task"] == "vqa" and r["metric"] == "open_recall"} >= {
        ("vqa-rad", "legacy"), ("vqa-rad", "strict"), ("overall", "legacy"), ("macro", "strict")
    }  # fmt: skip
    readme = (snapshot / "README.md").read_text()
    assert (snapshot / "figures" / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![comparison](figures/comparison.png)" in readme and "Stand-in judge" in readme
    assert re.search(r"Judge requests cost \$\d+\.\d{4} \(sent \d+ online \(\$\d+\.\d{4}\)\)", readme)
    inputs = lineage_of(hub.read_card("quickstart/eval", pushed.commit))["inputs"]
    assert {i.get("repo_id") for i in inputs} >= {"fixtures/vqa-rad", "fixtures/slake", "fixtures/llava-med-chat"}
    # The config names the fixtures at main; the run reads them at the commits it pushed, and asks for those.
    fixtures = [i for i in inputs if str(i.get("repo_id")).startswith("fixtures/")]
    assert len(fixtures) == 4 and all(i["revision"] == i["commit"] for i in fixtures)
    # A model folder is not a hub repo: its card with the results is written next to the journals.
    results = ModelCard((out / "model_card" / "README.md").read_text()).data.eval_results
    assert {(r.dataset_name, r.metric_name) for r in results} >= {("VQA-RAD", "closed accuracy (legacy)")}


def test_one_evaluate_run_is_one_commit(root, first):
    """Every config, the chart and the card land together: no commit holds part of a run's results."""
    (pushed,), _ = first
    history = LocalHub(root / "hub").history("quickstart/eval", pushed.commit)
    assert len(history) == 1 and pushed.created
    tree = history[0]["tree"]
    assert {"README.md", "figures/comparison.png"} <= set(tree)
    assert {p.split("/")[0] for p in tree} >= {"vqa-rad", "slake", "path-vqa", "chat", "summary"}


def test_hub_model_gets_model_index_win_rate_and_comparison(root, first):
    ((base,), _) = first
    hub = LocalHub(root / "hub")
    out = root / "out-b"
    args = ["--model_name_or_path", "hub:quickstart/tiny-llava-b@main", "--model_label", "tiny-b", "--output_dir",
            str(out), "--eval_repo", "quickstart/eval-b", "--win_rate_against", f"quickstart/eval@{base.commit}",
            "--compare_with", f"quickstart/eval@{base.commit}"]  # fmt: skip
    pushed, card_push = evaluate(root, *args)
    assert card_push.repo_id == "quickstart/tiny-llava-b" and card_push.repo_type == "model"

    card = ModelCard(hub.read_file("quickstart/tiny-llava-b", "README.md", repo_type="model"))
    assert card.data.to_dict()["lineage"] == {"stage": "sft"}  # the rest of the card is kept
    results = card.data.eval_results
    vqa_rad = {r.metric_name: r for r in results if r.dataset_name == "VQA-RAD"}
    assert vqa_rad["closed accuracy (legacy)"].dataset_revision == hub.resolve("fixtures/vqa-rad")
    assert vqa_rad["closed accuracy (legacy)"].dataset_type == "fixtures/vqa-rad"
    assert vqa_rad["open recall (strict)"].dataset_split == "test"
    assert vqa_rad["open recall (strict)"].task_type == "visual-question-answering"
    assert any(r.metric_type == "relative_score" for r in results)
    assert any(r.metric_type == "win_rate" and "vs tiny-llava" in r.metric_name for r in results)

    wins = hub.load_dataset("quickstart/eval-b", "win_rate", revision=pushed.commit, split="test")
    assert len(wins) == 9 + 4 - 0  # open VQA questions of the three sets, and every chat question
    for r in wins:
        if r["outcome"] is None:
            assert r["judge_error"] and (r["verdict_model_first"] is None or r["verdict_model_second"] is None)
        else:
            assert r["verdict_model_first"] in "ABC" and r["verdict_model_second"] in "ABC"
    readme = (hub.snapshot("quickstart/eval-b", pushed.commit) / "README.md").read_text()
    assert "| metric | tiny-b | tiny-llava |" in readme and "## Win rate against `tiny-llava`" in readme

    # A rerun asks nothing again and replaces the model-index entries rather than adding to them.
    lines = journal_lines(out)
    evaluate(root, *args)
    assert journal_lines(out) == lines
    again = ModelCard(hub.read_file("quickstart/tiny-llava-b", "README.md", repo_type="model")).data.eval_results
    assert len(again) == len(results)


def test_compare_evals_pushes_a_table_and_a_chart(root, first):
    ((base,), _) = first
    pushed = load_recipe("compare_evals").cli(
        [
            "--hub",
            f"local:{root}/hub",
            "--eval_repos",
            f"quickstart/eval@{base.commit}",
            "quickstart/eval-b@main",
            "--output_repo",
            "quickstart/eval-comparison",
            "--output_dir",
            str(root / "cmp"),
        ]  # fmt: skip
    )
    hub = LocalHub(root / "hub")
    snapshot = hub.snapshot("quickstart/eval-comparison", pushed[0].commit)
    assert (snapshot / "figures" / "comparison.png").is_file() and (root / "cmp" / "comparison.png").is_file()
    rows = hub.load_dataset("quickstart/eval-comparison", split="test", revision=pushed[0].commit)
    assert set(rows["model"]) == {"tiny-llava", "tiny-b"}
    assert "| metric | tiny-llava | tiny-b |" in (snapshot / "README.md").read_text()
    assert json.loads(json.dumps(lineage_of(hub.read_card("quickstart/eval-comparison"))["inputs"]))[0]["commit"] == (
        base.commit
    )
