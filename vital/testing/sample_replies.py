"""The stand-in server's replies for the bundled sample pairs: what makes the offline quickstart answer sensibly.

The replies (``vital/data/sample/standin_responses.json``) were written by the maintainers, not by a model. They are
keyed by pair id; a request names its figure by caption, so the responder matches captions to pair ids.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from vital.testing.standin import SampleResponder


STAND_IN_NOTE = "stand-in replies bundled with biomed-vital (not model output)"


def _system_text(request_json: Mapping[str, Any]) -> str:
    for message in request_json.get("messages") or []:
        if isinstance(message, Mapping) and message.get("role") == "system":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


class SampleDataResponder:
    """Answers generation and answer-pair requests about the sample pairs from the bundled replies.

    The task is read from the system prompt (answer-pair requests ask for "Answer 2"); the figure from its caption
    in the last user message. Requests about unknown figures get a reply with no usable turns, which the generation
    stage records in its ``failures`` split, as it would a real model's unusable reply.
    """

    def __init__(self, pairs=None):
        from vital.data.sample import load_sample_pairs, sample_dir

        replies = json.loads((sample_dir() / "standin_responses.json").read_text(encoding="utf-8"))
        pairs = pairs if pairs is not None else load_sample_pairs()
        caption_of = dict(zip(pairs["id"], pairs["caption"], strict=True))
        unknown = "I do not have a prepared reply for this figure."
        self.conversation = SampleResponder(
            {caption_of[pid]: text for pid, text in replies["conversation"].items() if pid in caption_of}, unknown
        )
        self.answer_pairs = SampleResponder(
            {caption_of[pid]: text for pid, text in replies["answer_pairs"].items() if pid in caption_of}, unknown
        )

    def __call__(self, request_json: Mapping[str, Any]) -> str:
        from vital.testing.standin import _last_user_text

        text = _last_user_text(request_json)
        if "Give the pair ONE score" in text:
            return judge_reply(text)
        if "Answer 2" in _system_text(request_json):
            return self.answer_pairs(request_json)
        return self.conversation(request_json)


def judge_reply(text: str) -> str:
    """A deterministic stand-in for the rubric judge: longer, caption-grounded answers score higher.

    About one request in seven first gets a reply without a score (as real judges sometimes give), so the judge's
    retry path runs; asked again with the reminder, it answers properly.
    """
    import hashlib
    import re

    from vital.rating import RETRY_NOTE

    answer = text.split("\nAnswer:\n", 1)[-1].split("\n\n", 1)[0]
    caption = text.split("Figure Caption:\n", 1)[-1].split("\n\n", 1)[0]
    digest = int(hashlib.sha256(text.encode()).hexdigest(), 16)
    if digest % 7 == 0 and RETRY_NOTE not in text:
        return "This question-answer pair is reasonable overall, although the answer could be more specific."
    words = re.findall(r"[a-z]+", answer.lower())
    grounded = len(set(words) & set(re.findall(r"[a-z]{4,}", caption.lower())))
    score = max(0, min(10, 1 + len(words) // 25 + grounded // 2))
    return f"{score}\nStand-in judgement: {len(words)} answer words, {grounded} shared with the caption."


def start_stand_in(
    endpoint, responder, latency_ms: float = 0.0, faults: float = 0.0, seed: int = 0, server_class=None, **kwargs
):
    """Start a stand-in server on loopback answering with ``responder``, and point ``endpoint`` at it.

    ``faults`` is split evenly over 429 (with a short Retry-After), 500 and malformed replies. ``server_class``
    (default `StandInServer`) and ``kwargs`` choose another server, e.g. the stand-in Batch API. Returns the running
    server (stop it when done) and the endpoint to use.
    """
    import dataclasses

    from vital.testing.standin import StandInServer

    rate = faults / 3
    server = (server_class or StandInServer)(
        responder,
        latency_ms=latency_ms,
        fault_429=rate,
        fault_500=rate,
        fault_malformed=rate,
        retry_after_s=0.05,
        seed=seed,
        **kwargs,
    ).start()
    endpoint = dataclasses.replace(
        endpoint, provider="openai-compatible", base_url=server.base_url, model=server.model
    )
    return server, endpoint
