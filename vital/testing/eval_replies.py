"""A deterministic stand-in for the evaluation stage's models: the open-chat judge, the pairwise judge and a VQA
answerer, for the stand-in endpoint (`vital stand-in`, `vital.testing.serve`: offline tests and the quickstart).

* Chat judge requests (``[Assistant 1]`` ... ``[Assistant 2]``): the reference gets 8, the answer 1 + 9 × the share of
  the reference's words it contains, rounded. About one request in five first gets a reply without scores, and about
  one in ten never gets a readable one (a refusal), so the re-ask and the exclusion paths run.
* Pairwise requests (``[Reference answer]``, ``[Assistant A]``, ``[Assistant B]``): the answer sharing more of the
  reference's words wins; when the two are within 0.05 of each other the stand-in always says ``[[A]]`` (a position
  bias, which the swapped second ask turns into a tie). About one in six first gets no verdict, one in twelve never.
* Anything else is a question for the evaluated model: a yes/no question gets ``yes`` or ``no`` (by a hash), any other
  a short fixed sentence.

Nothing here is model output; artifacts built from it say so (``stand_in``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any


_WORD = re.compile(r"[a-z0-9]{3,}")
_YES_NO_START = re.compile(r"^\s*(is|are|does|do|did|can|was|were|has|have|could|should|will)\b", re.IGNORECASE)


def _section(text: str, start: str, end: str) -> str:
    head, sep, rest = text.partition(start)
    return rest.partition(end)[0].strip() if sep else ""


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def overlap(answer: str, reference: str) -> float:
    """The share of the reference's words (3+ letters, lower case) that the answer contains."""
    ref = _words(reference)
    return len(_words(answer) & ref) / len(ref) if ref else 0.0


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest(), 16)


def chat_judge_reply(text: str) -> str:
    """The stand-in chat judge's reply to one request text (see the module docstring)."""
    from vital.evaluation.chat_judge import CHAT_JUDGE_RETRY_NOTE

    retry = CHAT_JUDGE_RETRY_NOTE in text
    digest = _digest(text.replace(f"\n\n{CHAT_JUDGE_RETRY_NOTE}", ""))
    if digest % 10 == 0:
        return "I'm sorry, I cannot grade these answers without seeing the figure."
    if digest % 5 == 0 and not retry:
        return "Both assistants address the question, with a different emphasis and level of detail."
    reference = _section(text, "[Assistant 1]\n", "\n[End of Assistant 1]")
    answer = _section(text, "[Assistant 2]\n", "\n[End of Assistant 2]")
    share = overlap(answer, reference)
    score = max(1, min(10, round(1 + 9 * share)))
    return f"8 {score}\nStand-in judgement: Assistant 2 repeats {share:.0%} of the reference's words."


def verdict_reply(text: str) -> str:
    """The stand-in pairwise judge's reply to one request text (see the module docstring)."""
    from vital.evaluation.win_rate import WIN_RATE_RETRY_NOTE

    retry = WIN_RATE_RETRY_NOTE in text
    digest = _digest(text.replace(f"\n\n{WIN_RATE_RETRY_NOTE}", ""))
    if digest % 12 == 0:
        return "Both answers have merits and shortcomings; I would rather not choose."
    if digest % 6 == 0 and not retry:
        return "Assistant A is more specific, but Assistant B is closer to the reference in places."
    reference = _section(text, "[Reference answer]\n", "\n[End of reference answer]")
    a = overlap(_section(text, "[Assistant A]\n", "\n[End of Assistant A]"), reference)
    b = overlap(_section(text, "[Assistant B]\n", "\n[End of Assistant B]"), reference)
    if abs(a - b) < 0.05:
        verdict = "A"  # a position bias: near ties go to whoever came first
    else:
        verdict = "A" if a > b else "B"
    return f"Stand-in comparison: A shares {a:.0%} and B {b:.0%} of the reference's words.\n[[{verdict}]]"


def answer_reply(text: str) -> str:
    """The stand-in answerer: ``yes``/``no`` for a yes/no question (by a hash), otherwise a short sentence."""
    question = text.strip()
    if _YES_NO_START.match(question):
        return "yes" if _digest(question) % 2 == 0 else "no"
    return "The image shows a medical scan."


class EvalStandInResponder:
    """The stand-in server's responder for the evaluation stage: ``request_json -> reply text``."""

    def __call__(self, request_json: Mapping[str, Any]) -> str:
        from vital.testing.standin import _last_user_text

        text = _last_user_text(request_json)
        if "[Assistant 1]" in text and "[Assistant 2]" in text:
            return chat_judge_reply(text)
        if "[Reference answer]" in text and "[Assistant A]" in text:
            return verdict_reply(text)
        return answer_reply(text)
