"""Rating with the paper's layout: the official-style system message and `[Context] ... [System]`; parsing stays
strict (never a default score) and the card counts the replies that had no readable score."""

import pytest

from vital.data.schemas import qa_turns
from vital.hub import LocalHub
from vital.rating import (
    JUDGE_SYSTEM,
    PAPER_JUDGE_SYSTEM,
    RUBRIC,
    build_rating_messages,
    parse_score,
    rating_prompt_sha,
)
from vital.runner import load_recipe


CANDIDATE = {
    "images": ["img"],
    "caption": "Axial CT of the liver.",
    "mentions": ["CT showed a lesion (Figure 1).", "It was hypodense."],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Which modality?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A CT scan."}]},
    ],
}


def test_paper_layout_is_context_then_system():
    messages = build_rating_messages(CANDIDATE, 0, lambda im: "data:x", prompt_style="paper")
    assert messages[0] == {"role": "system", "content": PAPER_JUDGE_SYSTEM}
    image, text = messages[1]["content"]
    assert image == {"type": "image_url", "image_url": {"url": "data:x"}}
    assert text["text"] == (
        "[Context]\nFigure Caption:\n\t- Axial CT of the liver.\n\n"
        "Figure Context:\n\t- CT showed a lesion (Figure 1).\n\t- It was hypodense.\n\n"
        "Question:\n\t- Which modality?\n\nAnswer:\n\t- A CT scan.\n\n"
        f"[System]\n{RUBRIC}"
    )
    ours = build_rating_messages(CANDIDATE, 0, lambda im: "data:x", prompt_style="ours")
    assert ours[0]["content"] == JUDGE_SYSTEM and "[Context]" not in ours[1]["content"][1]["text"]
    assert rating_prompt_sha("paper") != rating_prompt_sha("ours")
    with pytest.raises(ValueError, match="prompt_style"):
        build_rating_messages(CANDIDATE, 0, str, prompt_style="official")


@pytest.mark.parametrize("reply", ["Score: 7 and 8\nreason", "The pair is good.\n8", "11\ntoo high", ""])
def test_strict_parsing_never_defaults(reply):
    # The official parser would take the first integer of the first line or fall back to a default score.
    with pytest.raises(ValueError):
        parse_score(reply)


@pytest.mark.slow
def test_rate_recipe_with_the_paper_layout_counts_parse_failures(tmp_path, stand_in):
    hub = f"local:{tmp_path}/hub"
    load_recipe("ingest").cli(["--config", "recipes/quickstart/ingest.yaml", "--hub", hub])
    server = stand_in(faults=0.05, latency_ms=10)
    load_recipe("generate").cli(["--config", "recipes/quickstart/generate.yaml", "--hub", hub, "--journal_dir",
                                 str(tmp_path / "gen"), "--answer_pairs", "0", *server])  # fmt: skip
    (pushed,) = load_recipe("rate").cli(["--config", "recipes/quickstart/rate.yaml", "--hub", hub, "--journal_dir",
                                         str(tmp_path / "rate"), "--prompt_style", "paper", *server])  # fmt: skip
    local = LocalHub(tmp_path / "hub")
    ratings = local.load_dataset("quickstart/ratings", split="train", revision=pushed.commit)
    candidates = local.load_dataset("quickstart/candidates", split="train")
    assert len(ratings) == sum(len(qa_turns(m)) for m in candidates["messages"])
    assert {r["judge"]["prompt_sha"] for r in ratings} == {rating_prompt_sha("paper")}
    retried = sum(a > 1 for a in ratings["judge_attempts"])
    unparsed = sum((e or "").startswith("unparseable") for e in ratings["error"])
    assert retried > 0  # the stand-in judge first answers some turns without a score
    assert all((s is None) == (e is not None) for s, e in zip(ratings["score"], ratings["error"], strict=True))
    card = (local.snapshot("quickstart/ratings", pushed.commit) / "README.md").read_text()
    assert "layout `paper`" in card
    # every unreadable first reply was asked again (judge_retries: 1), so the failures are the retried turns
    assert f"| parse failures | {retried} repl" in card and f"({retried - unparsed} read on a re-ask, up to 1;" in card
    assert f"{unparsed} left as null scores" in card and "no default score is ever filled in" in card
