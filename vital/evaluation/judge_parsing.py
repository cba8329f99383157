"""Reading judge replies: LLaVA-Med's open-chat scores and the pairwise win-rate verdicts.

The chat judge (LLaVA-Med's protocol) sees a reference answer as Assistant 1 and the model's answer as Assistant 2 and
is asked for both scores (1-10) on the first line, then an explanation. The win-rate judge ends with ``[[A]]``,
``[[B]]`` or ``[[C]]`` (tie) and is asked twice with the answers swapped; `combine_swapped` joins the two orders.

A reply that cannot be read raises `ParseError` with a short ``reason`` ("no scores", "one score", "out of range",
"ambiguous", "no verdict", "refusal", ...) that is stored with the raw reply. Nothing is guessed: an unreadable verdict
is never a tie and an unreadable score is never a number.
"""

from __future__ import annotations

import re
from typing import Literal


Verdict = Literal["A", "B", "C"]
Outcome = Literal["win", "loss", "tie"]

SCORE_RANGE = (1.0, 10.0)


class ParseError(ValueError):
    """A judge reply that cannot be read; ``reason`` is the short code kept with the raw reply."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"'})
_MARKUP = str.maketrans("", "", "*`")  # bold, italics and code marks around scores and verdicts

_REFUSAL = re.compile(
    r"\b(?:i'?m sorry|i am sorry|i apologi[sz]e|i (?:cannot|can't|can not|am unable|'m unable|am not able|won't)"
    r"|unable to (?:provide|evaluate|assess|rate|score|judge|determine|compare)|as an ai\b)",
    re.IGNORECASE,
)

_NUM = r"(\d+(?:\.\d+)?)"
_OUT_OF_TEN = r"(?:\s*/\s*10(?:\.0)?|\s+out\s+of\s+10)?"
_LABEL_PREFIX = r"(?:[a-z][a-z ()']*?\s*[:\-\u2013=]\s*)?"  # "Scores:", "Final scores -", ...: no digits
_PAIR_SEPARATOR = r"(?:\s*[,;|&]\s*|\s+and\s+|\s+vs\.?\s+|\s+)"
# A line that holds exactly two scores (after markup is removed): "8 7", "8, 7", "Scores: 8 and 7", "(8/10, 7/10)."
_PAIR_LINE = re.compile(
    rf"^{_LABEL_PREFIX}[\[(]?\s*{_NUM}{_OUT_OF_TEN}{_PAIR_SEPARATOR}{_NUM}{_OUT_OF_TEN}\s*[\])]?\s*\.?$",
    re.IGNORECASE,
)
_SINGLE_LINE = re.compile(rf"^{_LABEL_PREFIX}[\[(]?\s*{_NUM}{_OUT_OF_TEN}\s*[\])]?\s*\.?$", re.IGNORECASE)
# "Assistant 1: 8", "Assistant 2 (model) = 7/10", "Score for Assistant 1: 8"; the score must stand alone ("3-step" no).
_LABELLED = re.compile(
    rf"assistant\s*#?\s*([12])\b[^\d\n]{{0,30}}?[:=\-\u2013]\s*{_NUM}{_OUT_OF_TEN}(?![\w\-])",
    re.IGNORECASE,
)


def _lines(text: str) -> list[str]:
    lines = (line.strip().lstrip("#>").strip() for line in text.splitlines())
    return [line for line in lines if line]


def _checked(first: str, second: str) -> tuple[float, float]:
    low, high = SCORE_RANGE
    scores = float(first), float(second)
    for score in scores:
        if not low <= score <= high:
            raise ParseError("out of range", f"score {score:g} is outside {low:g}-{high:g}")
    return scores


def parse_pair_scores(reply: str) -> tuple[float, float]:
    """Read the chat judge's two scores as ``(score_reference, score_model)`` (Assistant 1, Assistant 2).

    Accepted, in this order of trust: the pair on the first line as requested (``8 7``, ``8, 7``, ``Scores: 8 and 7``,
    ``**8** **7**``, ``7.5 8``, ``8/10 7/10``); scores labelled by assistant anywhere, in either order
    (``Assistant 2: 7`` / ``Assistant 1: 8`` gives ``(8, 7)``); a pair line after a preamble. Scores must lie in 1-10.

    Raises:
        ParseError: reason ``empty``, ``refusal``, ``one score``, ``no scores``, ``out of range`` or ``ambiguous``
            (one assistant labelled with two different scores).
    """
    if not isinstance(reply, str) or not reply.strip():
        raise ParseError("empty")
    text = reply.translate(_QUOTES).translate(_MARKUP)
    lines = _lines(text)

    # 1. As the prompt asks: both scores alone on the first line.
    pair = _PAIR_LINE.match(lines[0])
    if pair:
        return _checked(pair.group(1), pair.group(2))

    # 2. Scores labelled by assistant, in any order.
    labelled: dict[str, set[float]] = {}
    for label, score in _LABELLED.findall(text):
        labelled.setdefault(label, set()).add(float(score))
    if len(labelled) == 2:
        if any(len(scores) > 1 for scores in labelled.values()):
            raise ParseError("ambiguous", f"assistants labelled with several scores: {labelled}")
        (reference,), (model,) = labelled["1"], labelled["2"]
        return _checked(str(reference), str(model))

    # 3. The pair on a later line, after a preamble.
    for line in lines[1:]:
        pair = _PAIR_LINE.match(line)
        if pair:
            return _checked(pair.group(1), pair.group(2))

    if _REFUSAL.search(text):
        raise ParseError("refusal")
    if labelled or any(_SINGLE_LINE.match(line) for line in lines):
        raise ParseError("one score", "expected two scores, one per assistant")
    raise ParseError("no scores")


_VERDICT = re.compile(r"\[\[\s*([abc])\s*\]\]", re.IGNORECASE)
_TRAILING = " \t\r\n.!\"'"  # may follow the final verdict; a closing bracket may not (an aside, not the end)


def parse_verdict(reply: str, position: str = "last") -> Verdict:
    """Read a pairwise verdict ``[[A]]``, ``[[B]]`` or ``[[C]]`` (tie) from the judge's reply.

    Case, inner spaces (``[[ a ]]``), bold and surrounding text do not matter, nor does where the token stands. When
    several DIFFERENT verdicts appear (a judge restating the format, then deciding), the one at the asked ``position``
    counts only if the reply ends with it (``"last"``) or begins with it (``"first"``, the official BioMed-VITAL
    win-rate prompt's order).

    Raises:
        ParseError: reason ``no verdict``, ``refusal`` (no verdict and a refusal) or ``ambiguous``.
    """
    if not isinstance(reply, str):
        raise ParseError("no verdict", f"reply is {type(reply).__name__}, not text")
    text = reply.translate(_QUOTES).translate(_MARKUP)
    tokens = list(_VERDICT.finditer(text))
    if not tokens:
        if _REFUSAL.search(text):
            raise ParseError("refusal")
        raise ParseError("no verdict")
    if position not in ("first", "last"):
        raise ValueError(f"position must be 'first' or 'last', got {position!r}")
    letters = {token.group(1).upper() for token in tokens}
    if len(letters) == 1:
        return tokens[-1].group(1).upper()  # type: ignore[return-value]
    if position == "last" and tokens[-1].end() == len(text.rstrip(_TRAILING)):
        return tokens[-1].group(1).upper()  # type: ignore[return-value]
    if position == "first" and tokens[0].start() == len(text) - len(text.lstrip(_TRAILING)):
        return tokens[0].group(1).upper()  # type: ignore[return-value]
    where = "end" if position == "last" else "begin"
    raise ParseError("ambiguous", f"verdicts {sorted(letters)} and the reply does not {where} with one")


_FIRST_ORDER: dict[str, Outcome] = {"A": "win", "B": "loss", "C": "tie"}  # the model is A
_SWAPPED_ORDER: dict[str, Outcome] = {"A": "loss", "B": "win", "C": "tie"}  # the model is B


def combine_swapped(v_ab: Verdict, v_ba: Verdict) -> Outcome:
    """The model's outcome from two verdicts with the answers swapped (the model is A in the first order, B in the
    second). Two agreeing verdicts count; disagreeing ones are a tie (position bias cancels out).

    A reply that failed to parse is not a verdict: record it as unparsed rather than passing a guess here.
    """
    for name, verdict in (("v_ab", v_ab), ("v_ba", v_ba)):
        if verdict not in _FIRST_ORDER:
            raise ValueError(f"{name} must be 'A', 'B' or 'C', got {verdict!r}")
    first, second = _FIRST_ORDER[v_ab], _SWAPPED_ORDER[v_ba]
    return first if first == second else "tie"
