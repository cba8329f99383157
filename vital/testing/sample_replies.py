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
        if "Answer 2" in _system_text(request_json):
            return self.answer_pairs(request_json)
        return self.conversation(request_json)
