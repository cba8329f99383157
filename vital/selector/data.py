"""Data for the selector: the text it scores, its collator, and its two kinds of training pairs.

- **Text to score.** A candidate turn is (image, question, answer) plus the pair's caption and mentions; the selector
  scores one image and one text made by joining the fields named in ``SelectorConfig.text_fields`` (newline-separated,
  in that order), or by filling ``SelectorConfig.text_template`` (the official :data:`OFFICIAL_TEXT_TEMPLATE`). :func:`candidate_turn_text` and :func:`preference_side` build it from a candidate row and from one
  side of a preference row.
- **Collator.** :class:`SelectorCollator` turns preference rows into one batch of ``2 * B`` inputs, the ``B`` chosen
  sides first and then the ``B`` rejected sides (TRL's reward-model layout), plus the per-pair ``weights`` and
  ``sources`` (1.0 for clinician pairs, 0.0 for model pairs).
- **Judge pairs.** :func:`build_judge_pairs` pairs candidate turns whose judge scores differ by at least ``min_gap``
  (the paper's pairs from different score levels) and splits them into train and held-out sets with disjoint
  candidates; ``sampling="score_levels"`` draws them as the official code does (a level first, then an item).
- **Clinician pairs.** :func:`load_clinician_pairs` reads clinicians' choices from JSON / JSON lines / CSV.

Both pair builders write the preferences schema (``vital.data.schemas.PREFERENCE_FEATURES``). Judge pairs usually
compare turns with different questions, often on different images, which the schema's shared ``prompt`` / ``images``
cannot hold; they therefore also carry ``chosen_prompt`` / ``rejected_prompt``, ``chosen_images`` /
``rejected_images`` and ``chosen_caption`` / ``rejected_caption`` (:data:`JUDGE_PAIR_FEATURES`), and their shared
``prompt`` / ``images`` are the chosen side's. The collator reads a side's own column when it is present and the shared
one otherwise. Do not feed judge pairs to a DPO-style trainer as they stand: their ``prompt`` does not belong to the
rejected answer.
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import io
import json
import logging
import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, DatasetDict, Features, Image, List, Value

from vital.data.errors import RecordError
from vital.data.schemas import (
    MESSAGES,
    PREFERENCE_FEATURES,
    image_part,
    message_text,
    qa_turns,
    text_part,
    undecoded,
    validate_messages,
    validate_preference,
    validate_rating,
)


logger = logging.getLogger(__name__)

__all__ = [
    "JUDGE_PAIR_FEATURES",
    "JUDGE_TURNS",
    "OFFICIAL_TEXT_TEMPLATE",
    "PAIR_SAMPLINGS",
    "TEXT_FIELDS",
    "SelectorCollator",
    "build_judge_pairs",
    "candidate_turn_text",
    "compose_text",
    "encode_texts_images",
    "load_clinician_pairs",
    "preference_side",
    "template_fields",
]

TEXT_FIELDS = ("question", "answer", "caption", "mentions")
"""Names allowed in ``text_fields``: the turn's question and answer, the figure's caption and in-text mentions."""

SIDES = ("chosen", "rejected")

JUDGE_PAIR_FEATURES = Features(
    {
        **PREFERENCE_FEATURES,
        "chosen_prompt": MESSAGES,
        "rejected_prompt": MESSAGES,
        "chosen_images": List(Image()),
        "rejected_images": List(Image()),
        "chosen_caption": Value("string"),
        "rejected_caption": Value("string"),
        "chosen_mentions": List(Value("string")),
        "rejected_mentions": List(Value("string")),
        "chosen_id": Value("string"),  # candidate id
        "rejected_id": Value("string"),
        "chosen_turn": Value("int32"),
        "rejected_turn": Value("int32"),
        "chosen_score": Value("float32"),  # judge score
        "rejected_score": Value("float32"),
    }
)
"""Judge pairs: the preferences schema plus each side's own prompt, images, caption and mentions, and where they came
from."""

PAIR_SAMPLINGS = ("uniform_pairs", "score_levels")
"""How :func:`build_judge_pairs` draws pairs: uniformly over all pairs with a large enough score gap (ours), or the
official way: a score level first, uniformly, then an item within it (``score_levels``)."""

JUDGE_TURNS = ("all", "first")
"""Which rated turns make judge-pair units: every turn (ours), or each candidate's first turn (the official code scores
only the first question-answer turn of a sample)."""

OFFICIAL_TEXT_TEMPLATE = "{caption}{mentions}Question:{question}Answer:{answer}"
"""The text the official selector scores: caption, in-text mention, ``Question:`` and ``Answer:``, with no separators."""

_TEMPLATE_FIELD = re.compile(r"\{(\w+)\}")
_OPTIONAL_IN_TEMPLATE = ("caption", "mentions")


# ---------------------------------------------------------------------------------------------------------------------
# The text to score
# ---------------------------------------------------------------------------------------------------------------------
def template_fields(template: str) -> list[str]:
    """The fields a text template names, in order (``"{caption}Question:{question}"`` -> ``[caption, question]``).

    Raises:
        ValueError: the template names a field that is not one of :data:`TEXT_FIELDS`, or none at all.
    """
    names = _TEMPLATE_FIELD.findall(template)
    unknown = [n for n in names if n not in TEXT_FIELDS]
    if unknown or not names:
        raise ValueError(f"text_template must name fields from {TEXT_FIELDS}, got {template!r}")
    return names


def compose_text(
    values: Mapping[str, Any], text_fields: Sequence[str], record_id: Any = None, template: str | None = None
) -> str:
    """The text the selector scores.

    Without ``template``: ``values[f]`` for ``f`` in ``text_fields``, stripped and joined with newlines (``mentions``
    may be a list of sentences, joined with spaces). With ``template`` (e.g. :data:`OFFICIAL_TEXT_TEMPLATE`): the
    template filled with the values as they are; a ``caption`` or ``mentions`` the row does not have (clinician pairs
    carry neither) is filled with an empty string, as the official code scores its clinician training pairs as
    ``Question:...Answer:...`` only.

    Raises:
        RecordError: a field is missing (None) in ``values`` (with a template: ``question`` or ``answer``); an empty
            string is accepted.
        ValueError: a name in ``text_fields`` (or the template) is not one of :data:`TEXT_FIELDS`.
    """
    if template is not None:
        filled = {}
        for name in template_fields(template):
            value = values.get(name)
            if value is None and name not in _OPTIONAL_IN_TEMPLATE:
                raise RecordError(record_id, name, f"missing, but text_template asks for {name!r}")
            if isinstance(value, list | tuple):
                value = " ".join(str(v) for v in value)
            filled[name] = "" if value is None else str(value)
        return _TEMPLATE_FIELD.sub(lambda m: filled[m.group(1)], template)
    parts = []
    for name in text_fields:
        if name not in TEXT_FIELDS:
            raise ValueError(f"unknown text field {name!r} (expected one of {TEXT_FIELDS})")
        value = values.get(name)
        if value is None:
            raise RecordError(record_id, name, f"missing, but text_fields asks for {name!r}")
        if isinstance(value, list | tuple):
            value = " ".join(str(v) for v in value)
        parts.append(str(value).strip())
    return "\n".join(parts)


def candidate_turn_text(
    candidate: Mapping[str, Any], turn: int, text_fields: Sequence[str], template: str | None = None
) -> str:
    """The text of a candidate's question–answer ``turn`` (from 0), as the selector scores it (see
    :func:`compose_text`)."""
    rid = candidate.get("id")
    turns = qa_turns(candidate["messages"])
    if not 0 <= turn < len(turns):
        raise RecordError(rid, "turn", f"turn {turn} out of range: the conversation has {len(turns)} turn(s)")
    question, answer = turns[turn]
    values = {
        "question": question,
        "answer": answer,
        "caption": candidate.get("caption"),
        "mentions": candidate.get("mentions"),
    }
    return compose_text(values, text_fields, rid, template)


def _last_user_text(messages: Sequence[Mapping[str, Any]]) -> str | None:
    for message in reversed(messages or []):
        if message["role"] == "user":
            return message_text(message)
    return None


def preference_side(
    row: Mapping[str, Any], side: str, text_fields: Sequence[str], template: str | None = None
) -> tuple[Any, str]:
    """``(image, text)`` of the ``chosen`` or ``rejected`` side of a preference row.

    The image is the first of ``<side>_images`` if the row has that column, else of ``images``. The question is the
    last user message of ``<side>_prompt`` (else ``prompt``), the answer is the side's assistant text, the caption is
    ``<side>_caption`` (else ``caption``) and the mentions ``<side>_mentions`` (else ``mentions``).
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    rid = row.get("id")
    images = row.get(f"{side}_images") or row.get("images")
    if not images:
        raise RecordError(rid, "images", "the selector needs an image for every side")
    prompt = row.get(f"{side}_prompt") or row.get("prompt")
    values = {
        "question": _last_user_text(prompt),
        "answer": "\n".join(message_text(m) for m in row[side] if m["role"] == "assistant"),
        "caption": row.get(f"{side}_caption") or row.get("caption"),
        "mentions": row.get(f"{side}_mentions") or row.get("mentions"),
    }
    return images[0], compose_text(values, text_fields, rid, template)


# ---------------------------------------------------------------------------------------------------------------------
# Encoding and collation
# ---------------------------------------------------------------------------------------------------------------------
def _to_pil(image: Any):
    from PIL import Image as PILImage

    if isinstance(image, list | tuple):
        image = image[0]
    if isinstance(image, Mapping):
        data, path = image.get("bytes"), image.get("path")
        image = PILImage.open(io.BytesIO(data) if data else path)
    elif isinstance(image, str | Path):
        image = PILImage.open(image)
    if not isinstance(image, PILImage.Image):
        raise TypeError(f"expected an image, got {type(image).__name__}")
    return image if image.mode == "RGB" else image.convert("RGB")


def encode_texts_images(
    processor: Any,
    images: Sequence[Any],
    texts: Sequence[str],
    max_length: int | None = None,
    padding: bool | str = True,
) -> dict[str, torch.Tensor]:
    """Tokenise ``texts`` and preprocess ``images`` (one per text) with a dual-encoder processor.

    Returns ``input_ids``, ``attention_mask`` and ``pixel_values`` tensors. Texts are truncated to ``max_length``
    (default: the tokenizer's ``model_max_length``); ``padding="max_length"`` pads to it (SigLIP needs that).
    """
    tokenizer, image_processor = processor.tokenizer, processor.image_processor
    limit = tokenizer.model_max_length if max_length is None else min(max_length, tokenizer.model_max_length)
    text = tokenizer(
        list(texts),
        padding=padding,
        truncation=True,
        max_length=limit,
        return_tensors="pt",
        return_attention_mask=True,
    )
    pixels = image_processor([_to_pil(im) for im in images], return_tensors="pt")["pixel_values"]
    return {"input_ids": text["input_ids"], "attention_mask": text["attention_mask"], "pixel_values": pixels}


@dataclass
class SelectorCollator:
    """Preference rows -> one batch: chosen sides first, then rejected sides (pixel values repeated per side).

    Output keys: ``input_ids`` / ``attention_mask`` ``(2B, L)``, ``pixel_values`` ``(2B, C, H, W)``, ``weights``
    ``(B,)`` (the rows' ``weight``, 1.0 when absent) and ``sources`` ``(B,)`` (1.0 for ``clinician`` rows, else 0.0).

    Args:
        processor: the backbone's processor (``tokenizer`` and ``image_processor`` attributes).
        max_length: token limit per text (default: the tokenizer's ``model_max_length``).
        text_fields: fields joined into the scored text; use the model's ``config.text_fields``.
        padding: the tokenizer's padding (``"max_length"`` for SigLIP: the model's ``config.text_padding``).
        text_template: fills the scored text instead of joining ``text_fields`` (the model's ``config.text_template``).

    ``columns`` lists the dataset columns the collator reads; the trainer keeps them when it drops unused columns.
    """

    processor: Any
    max_length: int | None = None
    text_fields: Sequence[str] = ("question", "answer")
    padding: bool | str = True
    text_template: str | None = None
    columns: tuple[str, ...] = field(init=False)

    def __post_init__(self):
        compose_text(dict.fromkeys(self.text_fields, ""), self.text_fields)  # validates the names
        if self.text_template is not None:
            template_fields(self.text_template)
        self.columns = (
            "id",
            "prompt",
            "images",
            *SIDES,
            "source",
            "weight",
            "caption",
            "mentions",
            *(f"{side}_{what}" for side in SIDES for what in ("prompt", "images", "caption", "mentions")),
        )

    def __call__(self, rows: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        images, texts = [], []
        for side in SIDES:
            for row in rows:
                image, text = preference_side(row, side, self.text_fields, self.text_template)
                images.append(image)
                texts.append(text)
        batch = encode_texts_images(self.processor, images, texts, self.max_length, self.padding)
        weights = [1.0 if row.get("weight") is None else float(row["weight"]) for row in rows]
        batch["weights"] = torch.tensor(weights, dtype=torch.float32)
        batch["sources"] = torch.tensor([float(row.get("source") == "clinician") for row in rows])
        return batch


# ---------------------------------------------------------------------------------------------------------------------
# Judge pairs
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Turn:
    candidate_id: str
    turn: int
    score: float
    judge: str


def _rows(data: Any) -> Iterable[Mapping[str, Any]]:
    return data if not isinstance(data, Mapping) else [data]


def _undecoded(candidates: Any) -> Any:
    # Only the paired candidates' images are needed: keep the cells as bytes instead of decoding every image.
    return undecoded(candidates) if isinstance(candidates, Dataset) else candidates


def _split_rank(seed: int, candidate_id: str) -> str:
    return hashlib.sha256(f"{seed}:{candidate_id}".encode()).hexdigest()


def _sample_pairs(turns: list[_Turn], n: int, min_gap: float, rng: random.Random) -> list[tuple[_Turn, _Turn]]:
    """Up to ``n`` distinct pairs ``(better, worse)`` with a score gap >= ``min_gap``, uniform over such pairs."""
    turns = sorted(turns, key=lambda t: (t.score, t.candidate_id, t.turn))
    scores = [t.score for t in turns]
    # Turn i is the worse side of a pair with every turn scoring >= s_i + gap: all those at index >= hi[i].
    hi = [bisect.bisect_left(scores, s + min_gap) for s in scores]
    better_counts = [len(turns) - h for h in hi]  # ordered pairs (i worse, j better)
    total = sum(better_counts)
    if total == 0 or n <= 0:
        return []
    if total <= n:
        pairs = [(turns[j], turns[i]) for i in range(len(turns)) for j in range(hi[i], len(turns))]
        rng.shuffle(pairs)
        return pairs
    cumulative = []
    running = 0
    for count in better_counts:
        running += count
        cumulative.append(running)
    seen: set[tuple[int, int]] = set()
    pairs = []
    while len(pairs) < n:
        # A uniform draw over all valid pairs: pick the worse turn weighted by its number of partners, then a partner.
        i = bisect.bisect_right(cumulative, rng.randrange(total))
        j = rng.randrange(hi[i], len(turns))
        if (i, j) not in seen:
            seen.add((i, j))
            pairs.append((turns[j], turns[i]))
    return pairs


def _level_rank(seed: int, unit: _Turn) -> str:
    return hashlib.sha256(f"{seed}:{unit.candidate_id}#{unit.turn}".encode()).hexdigest()


def _split_levels(
    units: Iterable[_Turn], heldout_fraction: float, seed: int
) -> tuple[dict[float, list[_Turn]], dict[float, list[_Turn]]]:
    """Per score level, the first ``floor((1 - heldout_fraction) * n)`` units (ordered by a seeded hash) train, the
    rest are held out: the official 80/20 split per level (which takes the first 4/5 of each level's list)."""
    levels: dict[float, list[_Turn]] = {}
    for unit in units:
        levels.setdefault(unit.score, []).append(unit)
    train, heldout = {}, {}
    for level, members in levels.items():
        members.sort(key=lambda u: _level_rank(seed, u))
        cut = math.floor(round(len(members) * (1 - heldout_fraction), 9))
        train[level], heldout[level] = members[:cut], members[cut:]
    return train, heldout


def _sample_by_levels(
    levels: Mapping[float, list[_Turn]], n: int, min_gap: float, rng: random.Random
) -> list[tuple[_Turn, _Turn]]:
    """Up to ``n`` distinct pairs drawn the official way: two different score levels uniformly (levels with a single
    unit are never drawn, as in the official code), then one unit uniformly within each; the higher level is
    ``chosen``. Level pairs closer than ``min_gap`` are redrawn."""
    eligible = sorted(level for level, members in levels.items() if len(members) >= 2)
    if len(eligible) < 2 or n <= 0:
        return []
    if not any(b - a >= min_gap for a in eligible for b in eligible):
        return []
    seen: set[tuple[tuple[str, int], tuple[str, int]]] = set()
    pairs: list[tuple[_Turn, _Turn]] = []
    attempts, limit = 0, 50 * n + 1000
    while len(pairs) < n and attempts < limit:
        attempts += 1
        first, second = rng.sample(eligible, 2)
        if abs(first - second) < min_gap:
            continue
        a, b = rng.choice(levels[first]), rng.choice(levels[second])
        better, worse = (a, b) if first > second else (b, a)
        key = ((better.candidate_id, better.turn), (worse.candidate_id, worse.turn))
        if key in seen:  # the official code may draw a pair twice; one row per pair here
            continue
        seen.add(key)
        pairs.append((better, worse))
    return pairs


def build_judge_pairs(
    ratings: Any,
    candidates: Any,
    n_train: int,
    n_heldout: int,
    min_gap: float = 2.0,
    seed: int = 0,
    heldout_fraction: float | None = None,
    sampling: str = "uniform_pairs",
    turns: str = "all",
) -> DatasetDict:
    """Pairs of candidate turns from different judge-score levels, split into train and held-out.

    Every rated turn (non-null ``score``) is a unit (with ``turns="first"``, only each candidate's first turn).

    ``sampling="uniform_pairs"`` (ours): candidates are first split in two, ordered by a hash of
    ``(seed, candidate id)``, so no candidate has turns on both sides of the split and the split does not depend on the
    input order. Within each side, pairs of turns whose scores differ by at least ``min_gap`` are drawn uniformly
    without repetition (all of them, shuffled, when there are fewer than asked for; a warning says so).

    ``sampling="score_levels"`` (the official code): each score level's units are split
    ``1 - heldout_fraction`` / ``heldout_fraction`` (official 80/20; ordered by a seeded hash of the unit rather than
    file order), then a pair is two different levels drawn uniformly and one unit drawn uniformly within each. Level
    pairs are equally likely however many units they hold, so rare levels are over-represented. With
    ``turns="first"`` every candidate is one unit, so no candidate is on both sides.

    The better turn is ``chosen``; rows get ``source="model"``, ``weight=1.0`` and the judge model as ``annotator``.

    Args:
        ratings: rating rows (``candidate_id``, ``turn``, ``score``, ``judge``), a `Dataset` or a list of dicts.
        candidates: candidate rows (``id``, ``images``, ``messages``, ``caption``, ...), a `Dataset` or a list.
        n_train: number of train pairs wanted.
        n_heldout: number of held-out pairs wanted.
        min_gap: smallest score difference that makes a pair (the paper pairs different score levels: 1 or more).
        seed: seeds the split and the sampling; the same inputs and seed give the same pairs.
        heldout_fraction: share of candidates (``uniform_pairs``) or of each level's units (``score_levels``) held
            out; default ``n_heldout / (n_train + n_heldout)``.
        sampling: ``"uniform_pairs"`` or ``"score_levels"`` (:data:`PAIR_SAMPLINGS`).
        turns: ``"all"`` or ``"first"`` (:data:`JUDGE_TURNS`).

    Returns:
        A `DatasetDict` with ``train`` and ``heldout`` splits in :data:`JUDGE_PAIR_FEATURES`.

    Raises:
        RecordError: a rating names an unknown candidate or a turn the conversation lacks, is rated twice, or is
            malformed.
    """
    if min_gap <= 0:
        raise ValueError(f"min_gap must be positive, got {min_gap}")
    if sampling not in PAIR_SAMPLINGS:
        raise ValueError(f"sampling must be one of {PAIR_SAMPLINGS}, got {sampling!r}")
    if turns not in JUDGE_TURNS:
        raise ValueError(f"turns must be one of {JUDGE_TURNS}, got {turns!r}")
    if heldout_fraction is None:
        heldout_fraction = n_heldout / max(n_train + n_heldout, 1)
    if not 0 <= heldout_fraction <= 1:
        raise ValueError(f"heldout_fraction must lie in [0, 1], got {heldout_fraction}")

    by_id: dict[str, Mapping[str, Any]] = {}
    for row in _rows(_undecoded(candidates)):
        by_id[row["id"]] = row
    turns_by_key: dict[tuple[str, int], _Turn] = {}
    skipped = 0
    for row in _rows(ratings):
        validate_rating(row)
        cid, turn = row["candidate_id"], row["turn"]
        if row["score"] is None:
            skipped += 1
            continue
        candidate = by_id.get(cid)
        if candidate is None:
            raise RecordError(cid, "candidate_id", "rated candidate not found among the candidates")
        n_turns = len(qa_turns(candidate["messages"]))
        if turn >= n_turns:
            raise RecordError(cid, "turn", f"turn {turn} rated, but the conversation has {n_turns} turn(s)")
        if (cid, turn) in turns_by_key:
            raise RecordError(cid, "turn", f"turn {turn} is rated twice; deduplicate the ratings first")
        judge = (row.get("judge") or {}).get("model") or ""
        turns_by_key[(cid, turn)] = _Turn(cid, turn, float(row["score"]), judge)
    if skipped:
        logger.info("build_judge_pairs: %d rating(s) without a score skipped", skipped)
    if turns == "first":
        later = [key for key in turns_by_key if key[1] != 0]
        if later:
            logger.info(
                "build_judge_pairs: %d rating(s) of turns after the first left out (turns='first')", len(later)
            )
        turns_by_key = {key: unit for key, unit in turns_by_key.items() if key[1] == 0}

    rng = random.Random(seed)
    if sampling == "score_levels":
        train_levels, heldout_levels = _split_levels(turns_by_key.values(), heldout_fraction, seed)
        level_splits = {}
        for split, wanted, levels in (("train", n_train, train_levels), ("heldout", n_heldout, heldout_levels)):
            pairs = _sample_by_levels(levels, wanted, min_gap, rng)
            if len(pairs) < wanted:
                logger.warning(
                    "build_judge_pairs: only %d distinct %s pair(s) drawn by score level, %d asked for",
                    len(pairs),
                    split,
                    wanted,
                )
            level_splits[split] = _dataset([_judge_pair_row(b, w, by_id) for b, w in pairs], JUDGE_PAIR_FEATURES)
        return DatasetDict(level_splits)

    rated_ids = sorted({t.candidate_id for t in turns_by_key.values()}, key=lambda cid: _split_rank(seed, cid))
    n_heldout_ids = round(heldout_fraction * len(rated_ids))
    heldout_ids = set(rated_ids[:n_heldout_ids])

    splits = {}
    for split, wanted, keep in (("train", n_train, False), ("heldout", n_heldout, True)):
        units = [t for t in turns_by_key.values() if (t.candidate_id in heldout_ids) == keep]
        pairs = _sample_pairs(units, wanted, min_gap, rng)
        if len(pairs) < wanted:
            logger.warning(
                "build_judge_pairs: only %d %s pair(s) with a score gap >= %s, %d asked for",
                len(pairs),
                split,
                min_gap,
                wanted,
            )
        rows = [_judge_pair_row(better, worse, by_id) for better, worse in pairs]
        splits[split] = _dataset(rows, JUDGE_PAIR_FEATURES)
    return DatasetDict(splits)


def _dataset(rows: list[dict[str, Any]], features: Features) -> Dataset:
    if not rows:  # from_list cannot build an empty table with nested features
        return Dataset.from_dict({name: [] for name in features}, features=features)
    return Dataset.from_list(rows, features=features)


def _turn_prompt(candidate: Mapping[str, Any], question: str) -> list[dict[str, Any]]:
    n_images = len(candidate.get("images") or [])
    return [{"role": "user", "content": [image_part() for _ in range(n_images)] + [text_part(question)]}]


def _judge_pair_row(better: _Turn, worse: _Turn, by_id: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    sides = {}
    for side, unit in (("chosen", better), ("rejected", worse)):
        candidate = by_id[unit.candidate_id]
        question, answer = qa_turns(candidate["messages"])[unit.turn]
        sides[side] = {
            "prompt": _turn_prompt(candidate, question),
            "answer": [{"role": "assistant", "content": [text_part(answer)]}],
            "images": list(candidate.get("images") or []),
            "caption": candidate.get("caption"),
            "mentions": candidate.get("mentions"),
        }
    judges = dict.fromkeys(j for j in (better.judge, worse.judge) if j)
    return {
        "id": f"{better.candidate_id}#{better.turn}>{worse.candidate_id}#{worse.turn}",
        "prompt": sides["chosen"]["prompt"],
        "images": sides["chosen"]["images"],
        "chosen": sides["chosen"]["answer"],
        "rejected": sides["rejected"]["answer"],
        "source": "model",
        "annotator": "|".join(judges),
        "weight": 1.0,
        **{
            f"{side}_{what}": sides[side][what]
            for side in SIDES
            for what in ("prompt", "images", "caption", "mentions")
        },
        "chosen_id": better.candidate_id,
        "rejected_id": worse.candidate_id,
        "chosen_turn": better.turn,
        "rejected_turn": worse.turn,
        "chosen_score": better.score,
        "rejected_score": worse.score,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Clinician pairs
# ---------------------------------------------------------------------------------------------------------------------
_QUESTION_KEYS = ("question", "prompt")
_IMAGE_KEYS = ("image", "image_path")


def _read_rows(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            return [dict(row) for row in csv.DictReader(f)]
    text = path.read_text(encoding="utf-8")
    if suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if suffix == ".json":
        data = json.loads(text)
        if isinstance(data, Mapping):
            data = data.get("rows", data.get("data"))
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of rows (or an object with a 'rows' list)")
        return data
    raise ValueError(f"{path}: unsupported file type {suffix!r} (expected .json, .jsonl or .csv)")


def _first_key(row: Mapping[str, Any], keys: Sequence[str]) -> tuple[str, Any]:
    for key in keys:
        if row.get(key) not in (None, ""):
            return key, row[key]
    return keys[0], None


def _image_cell(value: Any, rid: str, field_name: str, root: Path | None) -> dict[str, Any]:
    if isinstance(value, Mapping) and (value.get("bytes") or value.get("path")):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, bytes | bytearray):
        data, name = bytes(value), None
    elif isinstance(value, str | Path):
        path = Path(value)
        if not path.is_absolute() and root is not None:
            path = root / path
        try:
            data = path.read_bytes()
        except OSError as e:
            raise RecordError(rid, field_name, f"image file not readable: {path} ({e.strerror or e})") from e
        name = path.name
    elif hasattr(value, "save") and hasattr(value, "size"):  # a PIL image
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        data, name = buffer.getvalue(), None
    else:
        raise RecordError(rid, field_name, f"expected an image path, got {type(value).__name__}")
    from PIL import Image as PILImage

    try:
        with PILImage.open(io.BytesIO(data)) as im:
            im.verify()
    except Exception as e:  # PIL raises many types for corrupt data
        raise RecordError(rid, field_name, f"not a readable image ({type(e).__name__}: {e})") from e
    return {"bytes": data, "path": name}


def _clinician_row(row: Mapping[str, Any], index: int, weight: float, root: Path | None) -> dict[str, Any]:
    rid = str(row.get("id") or f"row {index}")
    if isinstance(row.get("chosen"), list):  # already in the preferences schema
        out = {k: row.get(k) for k in PREFERENCE_FEATURES}
        out.update(id=rid, source="clinician", weight=float(weight), annotator=row.get("annotator") or "")
        out["images"] = [_image_cell(im, rid, f"images[{i}]", root) for i, im in enumerate(out.get("images") or [])]
        validate_preference(out)
        return out

    key, question = _first_key(row, _QUESTION_KEYS)
    if not isinstance(question, str) or not question.strip():
        raise RecordError(rid, key, "missing or empty question")
    answers = {}
    for side in SIDES:
        value = row.get(side)
        if not isinstance(value, str) or not value.strip():
            raise RecordError(rid, side, "missing or empty answer")
        answers[side] = value.strip()
    if answers["chosen"] == answers["rejected"]:
        raise RecordError(rid, "rejected", "identical to the chosen answer")
    key, image = _first_key(row, _IMAGE_KEYS)
    if image is None:
        raise RecordError(rid, key, "missing image")
    annotator = row.get("annotator")
    if not isinstance(annotator, str) or not annotator.strip():
        raise RecordError(rid, "annotator", "missing annotator")
    out = {
        "id": rid,
        "prompt": [{"role": "user", "content": [image_part(), text_part(question.strip())]}],
        "images": [_image_cell(image, rid, key, root)],
        "chosen": [{"role": "assistant", "content": [text_part(answers["chosen"])]}],
        "rejected": [{"role": "assistant", "content": [text_part(answers["rejected"])]}],
        "source": "clinician",
        "annotator": annotator.strip(),
        "weight": float(weight),
    }
    validate_messages(out["prompt"], rid, "prompt", n_images=1, complete=False)
    return out


def load_clinician_pairs(
    path_or_rows: str | Path | Iterable[Mapping[str, Any]], weight: float = 1.0, image_root: str | Path | None = None
) -> Dataset:
    """Clinicians' pairwise choices as preference rows (``source="clinician"``, the given ``weight``).

    Input rows are flat: ``question`` (or ``prompt``), ``chosen`` and ``rejected`` answer texts, ``image`` (or
    ``image_path``: a file path, relative to ``image_root`` or else to the file's folder) and ``annotator``; ``id`` is
    optional (default ``row <n>``, from 0). Rows already in the preferences schema (message lists) pass through with
    ``source`` and ``weight`` set. Images are embedded as bytes.

    Args:
        path_or_rows: a ``.json`` (list of objects), ``.jsonl`` or ``.csv`` file, or the rows themselves.
        weight: the loss weight of every pair (the paper up-weights clinician pairs).
        image_root: folder that relative image paths start from.

    Raises:
        RecordError: a row lacks a field, has an empty or identical answer, or an unreadable image; the error names
            the row and the field.
    """
    if not weight > 0:
        raise ValueError(f"weight must be positive, got {weight}")
    root = Path(image_root) if image_root is not None else None
    if isinstance(path_or_rows, str | Path):
        path = Path(path_or_rows)
        rows = _read_rows(path)
        root = root or path.parent
    else:
        rows = list(path_or_rows)
    out = []
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise RecordError(f"row {index}", "row", f"expected an object, got {type(row).__name__}")
        out.append(_clinician_row(row, index, weight, root))
    return _dataset(out, PREFERENCE_FEATURES)
