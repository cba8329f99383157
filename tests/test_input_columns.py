"""Every stage checks its input columns before any work, and names the dataset, its commit and config, and what is
missing (issue: `vital rate` on candidates without `messages` raised a bare `KeyError: 'messages'`)."""

from __future__ import annotations

import re

import pytest
from datasets import Dataset

from vital.data.inputs import STAGE_INPUTS, MissingColumnsError, require_columns
from vital.hub import LocalHub
from vital.runner import load_recipe


def push(hub: LocalHub, repo: str, columns: dict) -> str:
    return hub.push_dataset(Dataset.from_dict(columns), repo).commit


def check_message(error: pytest.ExceptionInfo, stage: str, repo: str, commit: str, missing: str) -> None:
    message = str(error.value)
    assert message.startswith(f"{stage}: ")
    assert f"{repo}@main (commit {commit[:12]}, config default)" in message
    assert f"has no column {missing}" in message
    assert not isinstance(error.value, KeyError)


@pytest.fixture
def hub(tmp_path):
    return LocalHub(tmp_path / "hub")


def test_rate_names_the_candidates_commit_and_the_missing_messages(hub, tmp_path):
    commit = push(hub, "t/candidates", {"id": ["c1"], "images": [[]], "caption": ["x"]})
    argv = ["--hub", f"local:{hub.root}", "--candidates_repo", "t/candidates", "--journal_dir", str(tmp_path / "j")]
    with pytest.raises(MissingColumnsError) as error:
        load_recipe("rate").cli([*argv, "--provider", "openai-compatible", "--base_url", "http://127.0.0.1:9/v1"])
    check_message(error, "rate", "t/candidates", commit, "'messages'")


def test_generate_checks_pairs(hub, tmp_path):
    commit = push(hub, "t/pairs", {"id": ["p1"], "image": [None], "modality": ["ct"]})
    push(hub, "t/demos", {"id": ["d1"], "messages": [[]], "modality": ["ct"]})
    argv = ["--hub", f"local:{hub.root}", "--pairs_repo", "t/pairs", "--demos_repo", "t/demos"]
    argv += ["--journal_dir", str(tmp_path / "j"), "--provider", "openai-compatible", "--base_url", "http://x:9/v1"]
    with pytest.raises(MissingColumnsError) as error:
        load_recipe("generate").cli(argv)
    check_message(error, "generate", "t/pairs", commit, "'caption'")


def test_train_selector_checks_ratings(hub, tmp_path):
    recipe = load_recipe("train_selector")
    push(hub, "t/candidates", {"id": ["c1"], "images": [[]], "messages": [[]]})
    commit = push(hub, "t/ratings", {"candidate_id": ["c1"], "turn": [0]})
    args, training_args = recipe.recipe_parser(
        (recipe.ScriptArguments, recipe.SelectorTrainingConfig)
    ).parse_args_and_config(
        [
            "--candidates_repo",
            "t/candidates",
            "--ratings_repo",
            "t/ratings",
            "--output_dir",
            str(tmp_path / "o"),
            "--bf16",
            "false",
            "--use_cpu",
            "true",
        ]
    )
    with pytest.raises(MissingColumnsError) as error:
        recipe.prepare_data(args, training_args, hub)
    check_message(error, "train_selector", "t/ratings", commit, "'score'")


def test_select_checks_candidates(hub):
    commit = push(hub, "t/candidates", {"id": ["c1"], "messages": [[]]})
    with pytest.raises(MissingColumnsError) as error:
        load_recipe("select").cli(["--hub", f"local:{hub.root}", "--candidates_repo", "t/candidates"])
    check_message(error, "select", "t/candidates", commit, "'images'")


def test_sft_names_the_formats_it_reads(hub):
    from vital.sft import load_sft_dataset

    commit = push(hub, "t/train", {"id": ["r1"], "text": ["hello"]})
    with pytest.raises(MissingColumnsError) as error:
        load_sft_dataset(hub, "t/train")
    check_message(error, "sft", "t/train", commit, "one of 'messages' or 'conversations' or 'image'+'caption'")


def test_evaluate_checks_the_benchmark(hub):
    from vital.evaluation.benchmarks import load_benchmark

    commit = push(hub, "t/vqa", {"question": ["q?"], "image": [None]})
    with pytest.raises(MissingColumnsError) as error:
        load_benchmark(hub, "mine=t/vqa:train")
    check_message(error, "evaluate", "t/vqa", commit, "'answer'")


def test_curate_demos_checks_pairs(hub, tmp_path):
    commit = push(hub, "t/pairs", {"id": ["p1"], "caption": ["c"], "modality": ["ct"]})
    with pytest.raises(MissingColumnsError) as error:
        load_recipe("curate_demos").cli(["--hub", f"local:{hub.root}", "--pairs_repo", "t/pairs"])
    check_message(error, "curate_demos", "t/pairs", commit, "'image'")


def test_the_table_covers_every_stage_and_present_columns_pass():
    assert set(STAGE_INPUTS) == {"generate", "rate", "train_selector", "select", "sft", "evaluate", "curate_demos"}
    rows = Dataset.from_dict({"id": ["c"], "images": [[]], "messages": [[]]})
    require_columns(rows, "rate", "candidates", "t/candidates@main")
    with pytest.raises(MissingColumnsError, match=re.escape("dataset t/x@v1 has no column 'score'")):
        require_columns(rows.remove_columns("images"), "train_selector", "ratings", "t/x@v1", columns=["id", "score"])
