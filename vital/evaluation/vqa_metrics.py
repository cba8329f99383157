"""VQA metrics for VQA-RAD, SLAKE and PathVQA in three modes, side by side.

``legacy`` behaves exactly like the metric LLaVA-Med published (and BioMed-VITAL reused), flaws included, so our
numbers compare with the literature; like LLaVA-Med's ``run_eval.py`` it also reports BLEU and BLEU-1/2/3 of the open
answers (nltk ``sentence_bleu`` on the once-normalised words, no smoothing). ``legacy_batch`` is LLaVA-Med's
``run_eval_batch.py``: the same, except that a closed item is a hit whenever the ground truth is a substring of the
prediction, with no yes/no gate, and open items also get its "open accuracy" (the ground truth as a substring).
``strict`` fixes the known flaws: word-level matching instead of substrings, recall as the share of distinct
ground-truth words found, closed answers read from the first yes/no word (a prediction without one is counted as
unanswered, never guessed), punctuation decided per mark and no cap on periods. Everything else (number words,
articles, contractions) is shared, so the two modes can be compared item by item.

`score_vqa` scores a whole split; the per-item functions are the same rules for one pair of strings. All functions
take the raw strings (any case): each one lower-cases and normalises as the mode requires.
"""

from __future__ import annotations

import math
import re
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal


Mode = Literal["legacy", "legacy_batch", "strict"]
MODES: tuple[str, ...] = ("legacy", "legacy_batch", "strict")
BLEU_WEIGHTS: dict[str, tuple[float, ...]] = {
    "bleu": (0.25, 0.25, 0.25, 0.25),  # sentence_bleu's default
    "bleu_1": (1, 0, 0, 0),
    "bleu_2": (0, 1, 0, 0),
    "bleu_3": (0, 0, 1, 0),
}

# The marks the legacy normaliser handles, in its order (the order does not change the result: each mark is decided
# on the original string and no replacement creates another mark). Periods are handled separately.
LEGACY_PUNCTUATION: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)  # fmt: skip
LEGACY_PERIOD_CAP = 32  # the original passes re.UNICODE (== 32) where re.sub expects the replacement count

NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})

# The VQA contraction table: a word found here gains its apostrophe(s). The original table also has four keys with
# capitals (the I'd've / I'm / I've family); they never match lower-cased text, so leaving them out changes nothing.
# "somebody'd" -> "somebodyd" is backwards in the original table; it is kept for parity.
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's",
    "somethingd": "something'd", "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's", "whereve": "where've",
    "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's",
    "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've",
    "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've",
    "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip

# The original maps number words, drops articles, then applies contractions; no word is in two of these, so one table
# does all three (an article maps to "", which the join skips).
_WORD_MAP: dict[str, str] = {**CONTRACTIONS, **NUMBER_WORDS, **dict.fromkeys(ARTICLES, "")}

_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
_LEGACY_MARK_CONTEXTS = tuple((mark, mark + " ", " " + mark) for mark in LEGACY_PUNCTUATION)

# strict: a comma between digits is a thousands separator (deleted); a period before a digit is a decimal point
# (kept); an apostrophe between word characters belongs to the word (kept); every other mark or symbol separates words.
_STRICT_THOUSANDS = re.compile(r"(?<=\d),(?=\d)")
_STRICT_ASCII_SEPARATORS = str.maketrans(
    dict.fromkeys((c for c in map(chr, range(128)) if not c.isalnum() and not c.isspace() and c not in ".'"), " ")
)
_STRICT_SEPARATORS = re.compile(r"[^\w\s.']+|_+")  # the same for the rest of Unicode
_STRICT_WORD_END_PERIOD = re.compile(r"\.(?!\d)")
_STRICT_EDGE_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")
_STRICT_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})

YES_NO: frozenset[str] = frozenset({"yes", "no"})


def _map_words(text: str) -> str:
    words = text.split()
    if _WORD_MAP.keys().isdisjoint(words):
        return " ".join(words)
    return " ".join(filter(None, [_WORD_MAP.get(word, word) for word in words]))


# ---------------------------------------------------------------------------------------------------------------------
# legacy


def legacy_normalize(text: str) -> str:
    """Normalise one answer exactly as LLaVA-Med's published metric does (after lower-casing, done here too).

    1. Punctuation: every mark of `LEGACY_PUNCTUATION` is deleted if the original string has it next to a space, or if
       the original string holds a digit-comma-digit anywhere (a global switch); otherwise it becomes a space.
    2. The first `LEGACY_PERIOD_CAP` periods not followed by a digit are deleted; later ones stay.
    3. Number words ``none``/``zero``..``ten`` become digits, the articles a/an/the are dropped.
    4. Words in the VQA contraction table gain their apostrophe (``dont`` -> ``don't``).
    5. Words are joined with single spaces; remaining commas are deleted.
    """
    s = work = text.lower()
    present = [context for context in _LEGACY_MARK_CONTEXTS if context[0] in s]
    if present:  # "," is a mark, so the digit-comma-digit switch can only matter here
        delete_all = "," in s and _DIGIT_COMMA_DIGIT.search(s) is not None
        for mark, mark_space, space_mark in present:
            work = work.replace(mark, "" if delete_all or mark_space in s or space_mark in s else " ")
    if "." in work:
        work = _PERIOD_NOT_BEFORE_DIGIT.sub("", work, count=LEGACY_PERIOD_CAP)
    return _map_words(work).replace(",", "")


def _legacy_twice(text: str) -> str:
    return legacy_normalize(legacy_normalize(text))


def _legacy_open_counts(pred: Counter[str], truth: Counter[str]) -> tuple[float, float, float, float]:
    """(recall, precision, f1, exact match) from twice-normalised word counts."""
    n_pred = sum(pred.values())
    exact = sum(1 for word in truth if word in pred) / n_pred if n_pred else 0.0
    if not pred or not truth:
        return 0.0, 0.0, 0.0, exact
    tp = sum(count for word, count in pred.items() if word in truth)  # the PREDICTION's multiplicity
    if tp == 0:
        return 0.0, 0.0, 0.0, exact
    fn = sum(count for word, count in truth.items() if word not in pred)
    recall = tp / (tp + fn)
    precision = tp / n_pred  # tp + fp
    return recall, precision, 2 * precision * recall / (precision + recall), exact


def legacy_open_scores(pred: str, truth: str) -> tuple[float, float, float]:
    """LLaVA-Med's open-question (recall, precision, F1) for one item, on raw strings.

    Both strings are normalised twice, as in the original. Words are counted with multiplicity; a word found in both
    counts with its multiplicity in the prediction, so ``"left left left"`` against ``"left lung"`` has recall 3/4.
    All three are 0 when either string is empty or no word is shared.
    """
    recall, precision, f1, _ = _legacy_open_counts(
        Counter(_legacy_twice(pred).split()), Counter(_legacy_twice(truth).split())
    )
    return recall, precision, f1


def legacy_exact_match(pred: str, truth: str) -> float:
    """LLaVA-Med's "exact match": distinct ground-truth words found in the prediction / prediction word count.

    Despite its name this is a precision; it is reported only for parity. Strings are normalised twice.
    """
    return _legacy_open_counts(Counter(_legacy_twice(pred).split()), Counter(_legacy_twice(truth).split()))[3]


def _legacy_hit(pred_norm: str, truth_norm: str) -> bool:
    return ("yes" in pred_norm or "no" in pred_norm) and truth_norm in pred_norm


def legacy_bleu(pred: str, truth: str) -> dict[str, float]:
    """``run_eval.py``'s BLEU, BLEU-1, BLEU-2 and BLEU-3 of one open answer (0-1): nltk ``sentence_bleu`` of the
    once-normalised prediction words against the once-normalised ground-truth words, without smoothing (so a
    prediction sharing no n-gram of an order with weight scores 0)."""
    return _bleu(legacy_normalize(pred).split(), legacy_normalize(truth).split())


def _bleu(pred_words: Sequence[str], truth_words: Sequence[str]) -> dict[str, float]:
    """nltk's ``sentence_bleu([truth_words], pred_words, weights)`` for each of `BLEU_WEIGHTS`, unsmoothed, computed
    once for the four weightings (nltk builds Fractions per call: 40x slower on 100k answers). The same arithmetic:
    clipped n-gram precisions (denominator at least 1), a 0 score when no unigram matches, a zero precision replaced by
    the smallest float (nltk's ``method0``), brevity penalty ``exp(1 - r/c)`` for a shorter prediction; tested equal to
    nltk in tests/evaluation/test_legacy_variants.py."""
    hyp_len, ref_len = len(pred_words), len(truth_words)
    precisions = []
    for n in range(1, 5):
        ref = Counter(zip(*(truth_words[i:] for i in range(n))))
        hyp = Counter(zip(*(pred_words[i:] for i in range(n)))) if ref else {}
        matched = sum(min(count, ref[gram]) for gram, count in hyp.items() if gram in ref)
        if n == 1 and matched == 0:
            return dict.fromkeys(BLEU_WEIGHTS, 0.0)
        precisions.append(matched / max(1, hyp_len - n + 1) if matched else sys.float_info.min)
    if hyp_len > ref_len:
        penalty = 1.0
    else:  # hyp_len > 0 here: a unigram matched
        penalty = math.exp(1 - ref_len / hyp_len)
    logs = [math.log(p) for p in precisions]
    return {
        name: penalty * math.exp(math.fsum(w * lp for w, lp in zip(weights, logs, strict=True)))
        for name, weights in BLEU_WEIGHTS.items()
    }


def legacy_batch_closed_hit(pred: str, truth: str) -> bool:
    """``run_eval_batch.py``'s closed hit: the once-normalised ground truth is a substring of the prediction, with no
    yes/no gate: ``"left"`` is a hit for ``"left"`` (a miss in ``legacy``, which first needs a yes/no substring), and
    ``"unknown"`` is a hit for ``"no"``."""
    return legacy_normalize(truth) in legacy_normalize(pred)


def legacy_closed_hit(pred: str, truth: str) -> bool:
    """LLaVA-Med's closed-question hit on raw strings (normalised once).

    A hit needs the substring ``yes`` or ``no`` anywhere in the prediction AND the ground truth as a substring of it:
    ``"nodule"`` is a hit for ``"no"``, and ``"eyes"`` or ``"normal"`` pass the first gate.
    """
    return _legacy_hit(legacy_normalize(pred), legacy_normalize(truth))


# ---------------------------------------------------------------------------------------------------------------------
# strict


def strict_normalize(text: str) -> str:
    """Normalise one answer for the ``strict`` mode.

    Lower-case; each mark is decided on its own: a comma between digits is deleted (``1,000`` -> ``1000``), a period
    before a digit is kept (``3.5``), an apostrophe inside a word is kept (``don't``); every other punctuation mark or
    symbol (``-``, ``*``, ``:``, ``%``, periods ending a word, with no cap, ...) separates words. Then the legacy word
    steps: number words to digits, articles dropped, contractions, single spaces.
    """
    s = text.lower()
    if not s.isascii():
        s = s.translate(_STRICT_QUOTES)
    if "," in s:
        s = _STRICT_THOUSANDS.sub("", s)
    s = s.translate(_STRICT_ASCII_SEPARATORS)  # fast for ASCII text (a C path in CPython)
    if not s.isascii():
        s = _STRICT_SEPARATORS.sub(" ", s)
    if "." in s:
        s = _STRICT_WORD_END_PERIOD.sub(" ", s)
    if "'" in s:
        s = _STRICT_EDGE_APOSTROPHE.sub(" ", s)
    return _map_words(s)


def _strict_recall(pred_words: frozenset[str], truth_words: frozenset[str]) -> float:
    if not pred_words or not truth_words:
        return 0.0
    return len(truth_words & pred_words) / len(truth_words)


def strict_open_recall(pred: str, truth: str) -> float:
    """Share of the distinct ground-truth words found as words in the prediction (0 when either is empty)."""
    return _strict_recall(frozenset(strict_normalize(pred).split()), frozenset(strict_normalize(truth).split()))


def strict_closed_answer(pred: str) -> str | None:
    """The first ``yes`` or ``no`` word of the prediction, or None when it has none (the item is unanswered)."""
    return _first_yes_no(strict_normalize(pred).split())


def _first_yes_no(words: Sequence[str]) -> str | None:
    for word in words:
        if word in YES_NO:
            return word
    return None


def _strict_hit(pred_words: list[str], truth_words: list[str]) -> tuple[bool, bool]:
    """(hit, unanswered) for a closed item, from strict-normalised words."""
    if len(truth_words) == 1 and truth_words[0] in YES_NO:
        answer = _first_yes_no(pred_words)
        return answer == truth_words[0], answer is None
    # A closed answer that is not yes/no (e.g. "left" for "left or right?"): the answer's words, in order, as a
    # contiguous run of the prediction's words; the word-level version of the legacy substring test.
    n = len(truth_words)
    if n == 0:
        return False, False
    first = truth_words[0]
    for i, word in enumerate(pred_words[: len(pred_words) - n + 1]):
        if word == first and pred_words[i : i + n] == truth_words:
            return True, False
    return False, False


def strict_closed_hit(pred: str, truth: str) -> bool:
    """Closed-question hit for ``strict``: the first yes/no WORD of the prediction equals the ground truth.

    A prediction without a yes/no word is a miss (and `score_vqa` counts it as unanswered). A ground truth that is not
    ``yes``/``no`` is a hit when its words appear, in order and contiguous, among the prediction's words.
    """
    return _strict_hit(strict_normalize(pred).split(), strict_normalize(truth).split())[0]


# ---------------------------------------------------------------------------------------------------------------------
# a whole split


def _answer_kinds(answer_types: Sequence[str]) -> list[bool]:
    """True for OPEN, False for CLOSED (case and surrounding spaces ignored); anything else is an error."""
    kinds = []
    for i, answer_type in enumerate(answer_types):
        kind = answer_type.strip().upper() if isinstance(answer_type, str) else None
        if kind == "OPEN":
            kinds.append(True)
        elif kind == "CLOSED":
            kinds.append(False)
        else:
            raise ValueError(f"item {i}: answer_type must be 'OPEN' or 'CLOSED', got {answer_type!r}")
    return kinds


def _check_strings(values: Sequence[Any], name: str) -> None:
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise TypeError(f"item {i}: {name} must be a string, got {type(value).__name__}")


def _mean100(values: list[float]) -> float | None:
    return 100.0 * sum(values) / len(values) if values else None


def score_vqa(
    predictions: Sequence[str],
    references: Sequence[str],
    answer_types: Sequence[str],
    mode: Mode = "legacy",
) -> dict[str, Any]:
    """Score a VQA split; items are matched by position.

    Args:
        predictions: generated answers.
        references: ground-truth answers.
        answer_types: ``"OPEN"`` or ``"CLOSED"`` per item (case-insensitive).
        mode: ``"legacy"`` (LLaVA-Med's published metric, ``run_eval.py``), ``"legacy_batch"`` (its
            ``run_eval_batch.py``: no yes/no gate on closed items) or ``"strict"``.

    Returns:
        ``closed_accuracy`` (mean hit ×100) and ``open_recall`` (mean recall ×100), each None when the split has no
        item of that type; ``n_closed``, ``n_open``; ``item_scores`` aligned with the inputs (the hit, 0 or 1, of a
        closed item, the recall, 0 to 1, of an open one) and ``mode``. ``legacy`` adds the other numbers the original
        prints: ``open_precision``, ``open_f1``, ``open_exact_match`` and ``open_bleu``, ``open_bleu_1/2/3`` (×100);
        ``legacy_batch`` the same and ``open_hit`` (the ground truth as a substring, ×100). ``strict`` adds
        ``n_closed_unanswered`` and ``item_unanswered`` (closed items whose prediction has no yes/no word).

    Raises:
        ValueError: lengths differ, an unknown answer type or mode.
        TypeError: a prediction or reference that is not a string.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    predictions, references = list(predictions), list(references)
    if not len(predictions) == len(references) == len(answer_types):
        raise ValueError(
            f"predictions ({len(predictions)}), references ({len(references)}) and answer_types "
            f"({len(answer_types)}) must have the same length; items are matched by position"
        )
    _check_strings(predictions, "prediction")
    _check_strings(references, "reference")
    kinds = _answer_kinds(answer_types)
    if mode in ("legacy", "legacy_batch"):
        return _score_legacy(predictions, references, kinds, batch=mode == "legacy_batch")
    return _score_strict(predictions, references, kinds)


def _score_legacy(
    predictions: list[str], references: list[str], is_open: list[bool], batch: bool = False
) -> dict[str, Any]:
    # Answers repeat (every "yes", every "no"): each distinct string is normalised once, and counted once.
    normalized: dict[str, str] = {}
    counts: dict[str, Counter[str]] = {}

    def norm(text: str) -> str:
        out = normalized.get(text)
        if out is None:
            out = normalized[text] = legacy_normalize(text)
        return out

    def words_twice(once: str) -> Counter[str]:
        out = counts.get(once)
        if out is None:
            out = counts[once] = Counter(norm(once).split())
        return out

    bleu_cache: dict[tuple[str, str], dict[str, float]] = {}
    item_scores: list[float] = []
    hits: list[float] = []
    recalls: list[float] = []
    precisions: list[float] = []
    f1s: list[float] = []
    exacts: list[float] = []
    open_hits: list[float] = []
    bleus: dict[str, list[float]] = {name: [] for name in BLEU_WEIGHTS}
    for pred, truth, open_item in zip(predictions, references, is_open):
        pred_once, truth_once = norm(pred), norm(truth)
        if open_item:
            recall, precision, f1, exact = _legacy_open_counts(words_twice(pred_once), words_twice(truth_once))
            recalls.append(recall)
            precisions.append(precision)
            f1s.append(f1)
            exacts.append(exact)
            open_hits.append(1.0 if truth_once in pred_once else 0.0)
            key = (pred_once, truth_once)
            if key not in bleu_cache:
                bleu_cache[key] = _bleu(pred_once.split(), truth_once.split())
            for name, value in bleu_cache[key].items():
                bleus[name].append(value)
            item_scores.append(recall)
        else:
            # run_eval_batch.py has no yes/no gate: the ground truth as a substring is enough.
            hit = truth_once in pred_once if batch else _legacy_hit(pred_once, truth_once)
            hits.append(1.0 if hit else 0.0)
            item_scores.append(hits[-1])
    out = {
        "mode": "legacy_batch" if batch else "legacy",
        "closed_accuracy": _mean100(hits),
        "open_recall": _mean100(recalls),
        "open_precision": _mean100(precisions),
        "open_f1": _mean100(f1s),
        "open_exact_match": _mean100(exacts),
        **{f"open_{name}": _mean100(values) for name, values in bleus.items()},
        "n_closed": len(hits),
        "n_open": len(recalls),
        "item_scores": item_scores,
    }
    if batch:
        out["open_hit"] = _mean100(open_hits)
    return out


def _score_strict(predictions: list[str], references: list[str], is_open: list[bool]) -> dict[str, Any]:
    words: dict[str, list[str]] = {}

    def split(text: str) -> list[str]:
        out = words.get(text)
        if out is None:
            out = words[text] = strict_normalize(text).split()
        return out

    item_scores: list[float] = []
    item_unanswered: list[bool] = []
    hits: list[float] = []
    recalls: list[float] = []
    for pred, truth, open_item in zip(predictions, references, is_open):
        pred_words, truth_words = split(pred), split(truth)
        if open_item:
            recall = _strict_recall(frozenset(pred_words), frozenset(truth_words))
            recalls.append(recall)
            item_scores.append(recall)
            item_unanswered.append(False)
        else:
            hit, unanswered = _strict_hit(pred_words, truth_words)
            hits.append(1.0 if hit else 0.0)
            item_scores.append(hits[-1])
            item_unanswered.append(unanswered)
    return {
        "mode": "strict",
        "closed_accuracy": _mean100(hits),
        "open_recall": _mean100(recalls),
        "n_closed": len(hits),
        "n_open": len(recalls),
        "n_closed_unanswered": sum(item_unanswered),
        "item_scores": item_scores,
        "item_unanswered": item_unanswered,
    }


# ---------------------------------------------------------------------------------------------------------------------
# the `evaluate` modules: inputs through Arrow

# Arrow stores UTF-8, and a lone surrogate (half of a UTF-16 pair, e.g. from a model's byte-level detokenisation)
# cannot be encoded: `evaluate` would raise UnicodeEncodeError where `score_vqa` scores the text. The modules move
# each lone surrogate to the Supplementary Private Use Area-A on the way in and back on the way out: a bijection
# (a character already in the escape range is prefixed with `_ESCAPE_MARK`), so the scores are `score_vqa`'s.
_ESCAPE_BASE, _ESCAPE_MARK = 0xF0000, "\U000f0800"
_TO_ESCAPE = re.compile("[\ud800-\udfff\U000f0000-\U000f0800]")
_ESCAPED = re.compile("\U000f0800([\U000f0000-\U000f0800])|([\U000f0000-\U000f07ff])")


def _escape_char(match: re.Match) -> str:
    char = match.group()
    return chr(_ESCAPE_BASE + ord(char) - 0xD800) if ord(char) < 0xE000 else _ESCAPE_MARK + char


def _unescape_char(match: re.Match) -> str:
    return match.group(1) or chr(0xD800 + ord(match.group(2)) - _ESCAPE_BASE)


def arrow_safe(text: Any) -> Any:
    """``text`` with lone surrogates replaced reversibly, so Arrow can store it (non-strings pass through)."""
    return _TO_ESCAPE.sub(_escape_char, text) if isinstance(text, str) and _TO_ESCAPE.search(text) else text


def from_arrow_safe(text: Any) -> Any:
    """The inverse of `arrow_safe`."""
    return _ESCAPED.sub(_unescape_char, text) if isinstance(text, str) and _ESCAPED.search(text) else text


def _escape_inputs(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: [arrow_safe(x) for x in v] if isinstance(v, list | tuple) else arrow_safe(v) for k, v in kwargs.items()}


class ArrowSafeInputs:
    """Mixin for an `evaluate.Metric`: its string inputs pass `arrow_safe` before Arrow stores them; ``_compute``
    gets them back with `unescaped`."""

    # (`evaluate` appends the inputs description to these docstrings: each needs one.)
    def compute(self, **kwargs):
        """Score the inputs (lone surrogates allowed)."""
        return super().compute(**_escape_inputs(kwargs))

    def add_batch(self, **kwargs):
        """Add a batch of inputs (lone surrogates allowed)."""
        return super().add_batch(**_escape_inputs(kwargs))

    def add(self, **kwargs):
        """Add one input (lone surrogates allowed)."""
        return super().add(**_escape_inputs(kwargs))

    @staticmethod
    def unescaped(values: Sequence[Any]) -> list[Any]:
        return [from_arrow_safe(v) for v in values]
