"""Evaluation with the paper's settings: the win-rate judge sees the image and begins with its verdict (official
eval/win_rate.py); answers sampled at temperature 0.7 with up to 1024 new tokens, shown on the eval card."""

import pytest

from vital.evaluation.judge_parsing import ParseError, parse_verdict
from vital.evaluation.win_rate import (
    WIN_RATE_VERDICT_FIRST,
    WIN_RATE_VERDICT_LAST,
    build_win_rate_messages,
    plan_win_rate_jobs,
    verdict_retry_job,
)


def test_verdict_first_prompt_and_parsing():
    messages = build_win_rate_messages("Q?", "ref", "a", "b", image_url="data:x", verdict_position="first")
    image, text = messages[1]["content"]
    assert image == {"type": "image_url", "image_url": {"url": "data:x"}}
    assert WIN_RATE_VERDICT_FIRST in text["text"] and WIN_RATE_VERDICT_LAST not in text["text"]
    last = build_win_rate_messages("Q?", "ref", "a", "b")
    assert WIN_RATE_VERDICT_LAST in last[1]["content"][0]["text"] and len(last[1]["content"]) == 1
    reply = "[[A]]\nA matches the reference; unlike [[B]], which misses the lesion."
    assert parse_verdict(reply, position="first") == "A"
    with pytest.raises(ParseError, match="ambiguous"):
        parse_verdict(reply)  # asked for it last, the reply does not end with a verdict
    closing = "B misses the lesion, [[B]] is not better.\n[[A]]"
    assert parse_verdict(closing) == "A"
    with pytest.raises(ParseError, match="ambiguous"):
        parse_verdict(closing, position="first")
    assert parse_verdict("  **[[C]]** both fine", position="first") == "C"


def test_verdict_position_is_part_of_the_request_key_and_the_reask():
    item = {"id": "q1", "question": "Q?", "reference": "r", "prediction": "a", "other_prediction": "b", "image": None}
    first = plan_win_rate_jobs([item], "judge", verdict_position="first")
    last = plan_win_rate_jobs([item], "judge")
    assert {j.key for j in first}.isdisjoint({j.key for j in last})

    class Result:
        ok, text = True, "[[A]] good, but [[B]] has merit"

    assert verdict_retry_job(first[0], Result(), 1, "first") is None  # readable when asked first
    assert verdict_retry_job(last[0], Result(), 1, "last") is not None  # unreadable when asked last: re-asked


@pytest.mark.slow
def test_eval_card_shows_the_sampling_settings(tmp_path, stand_in):
    from vital.hub import LocalHub
    from vital.runner import load_recipe
    from vital.testing.tiny_models import build_tiny_llava

    build_tiny_llava(tmp_path / "tiny-llava", seed=0)
    (pushed,) = load_recipe("evaluate").cli(
        [
            "--config",
            "recipes/quickstart/evaluate.yaml",
            *stand_in(faults=0.05),
            "--hub",
            f"local:{tmp_path}/hub",
            "--cache_dir",
            str(tmp_path / "cache"),
            "--model_name_or_path",
            str(tmp_path / "tiny-llava"),
            "--output_dir",
            str(tmp_path / "out"),
            "--do_sample",
            "true",
            "--sampling_temperature",
            "0.7",
            "--max_new_tokens",
            "6",
            "--chat_judge",
            "false",
            "--update_model_card",
            "false",
        ]  # fmt: skip
    )
    card = (LocalHub(tmp_path / "hub").snapshot("quickstart/eval", pushed.commit) / "README.md").read_text()
    assert "Answers: sampled at temperature 0.7 (top-p 1.0, seed 0), at most 6 new tokens" in card
    assert "closed acc. (legacy_batch)" in card and "BLEU-1/2/3" in card
