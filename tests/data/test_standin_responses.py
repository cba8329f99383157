"""The stand-in server's bundled replies: one conversation per sample pair, answer pairs for every modality, and all of
them parseable by the generator's own parsers, in the varied formats real models use."""

from __future__ import annotations

import json
import re

import pytest

from vital.data.sample import sample_dir
from vital.generation import parse_answer_pairs, parse_conversation


RESPONSES_FILE = "standin_responses.json"


@pytest.fixture(scope="module")
def responses():
    return json.loads((sample_dir() / RESPONSES_FILE).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def pairs():
    return json.loads((sample_dir() / "pairs.json").read_text(encoding="utf-8"))


def test_about_note_says_the_replies_are_not_model_output(responses):
    about = responses.get("about")
    assert isinstance(about, str) and about.strip()
    assert "not model output" in about
    assert set(responses) == {"about", "conversation", "answer_pairs"}


def test_every_pair_has_a_conversation_reply_and_nothing_else(responses, pairs):
    ids = [p["id"] for p in pairs]
    assert set(responses["conversation"]) == set(ids)
    assert all(isinstance(reply, str) and reply.strip() for reply in responses["conversation"].values())


def test_answer_pair_keys_are_pair_ids(responses, pairs):
    ids = {p["id"] for p in pairs}
    assert len(responses["answer_pairs"]) >= 8
    assert set(responses["answer_pairs"]) <= ids


def test_every_modality_has_answer_pairs(responses, pairs):
    modality = {p["id"]: p["modality"] for p in pairs}
    covered = {modality[pair_id] for pair_id in responses["answer_pairs"]}
    assert covered == set(modality.values())


def test_every_conversation_parses_into_four_or_more_turns(responses):
    for pair_id, reply in responses["conversation"].items():
        turns = parse_conversation(reply)
        assert 4 <= len(turns) <= 8, pair_id
        for turn in turns:
            assert turn.question and turn.answer, pair_id
            # A speaker label or markdown leaking into a turn means the parser split the reply wrongly.
            assert not re.search(r"\b(User|Assistant)\s*:|\*\*|```", turn.question + turn.answer), pair_id


def test_every_answer_pairs_reply_parses_into_three_or_more_triples(responses):
    for pair_id, reply in responses["answer_pairs"].items():
        triples = parse_answer_pairs(reply)
        assert len(triples) >= 3, pair_id
        for question, first, second in triples:
            assert question and first and second, pair_id
            assert first != second, f"{pair_id}: the two answers must differ"
            assert not re.search(r"\bAnswer\s*\d\s*:|\*\*", question + first + second), pair_id


def test_replies_vary_their_format_like_real_models(responses):
    """The replies exercise the parser's variants, not only plain "User:/Assistant:" text."""
    replies = list(responses["conversation"].values())

    def count(pattern):
        return sum(bool(re.search(pattern, reply, re.MULTILINE)) for reply in replies)

    assert count(r"^User: ") >= len(replies) // 3, "plain labels are the most common form"
    assert count(r"^\*\*User(:\*\*|\*\*:)") >= 1, "bold labels"
    assert count(r"^\d+\. User: ") >= 1, "numbered labels"
    assert count(r"^### User$") >= 1, "markdown-header labels"
    assert count(r"^Q1: ") >= 1, "Q1:/A1: labels"
    assert count(r"```json\s*\{") >= 1, "JSON in a code fence"
    assert count(r"^\s*- ") >= 1, "answers with bullet lists"
    assert count(r"\A(?!\s*(User|\*\*User|\d+\.|#|Q1|```))") >= 1, "a preamble before the first turn"
