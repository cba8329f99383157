"""Sample clinician preferences shipped with the package, joined to the answer pairs as the annotation app would export them.

``vital/data/sample/clinician_preferences.json`` says, for every question of the bundled stand-in answer pairs
(``standin_responses.json``, key ``answer_pairs``), which of the two answers a careful clinician would prefer, with a
note on why. The maintainers wrote them; they are **not clinician judgements** and every row says so in its
``annotator`` (``"biomed-vital maintainers (sample; not clinicians)"``). They exist so that the quickstart and the
tests can run the clinician-preference path of the selector offline.

:func:`load_sample_preferences` joins them with an answer-pairs dataset (the ``generate`` stage's second output:
``pair_id``, ``question``, ``prompt``, ``images``, ``answer_a``, ``answer_b``) by pair id and question, and returns
rows in the ``preferences`` schema with ``source="clinician"``: the form the annotation app exports and
``vital.selector.load_clinician_pairs`` reads.

Example::

    answer_pairs = hub.load_dataset("quickstart/answer-pairs", split="train")
    preferences = load_sample_preferences(answer_pairs, weight=100.0)
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vital.data.errors import RecordError
from vital.data.sample import sample_dir


if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)

__all__ = [
    "SAMPLE_ANNOTATOR",
    "SAMPLE_PREFERENCES_FILE",
    "SamplePreference",
    "load_sample_preferences",
    "read_sample_preferences",
    "sample_preferences_sha256",
]

SAMPLE_PREFERENCES_FILE = "clinician_preferences.json"
SAMPLE_ANNOTATOR = "biomed-vital maintainers (sample; not clinicians)"
_ANSWERS = {"Answer 1": "answer_a", "Answer 2": "answer_b"}


@dataclass(frozen=True)
class SamplePreference:
    """One judged question: which answer of the pair is better (``"Answer 1"`` = ``answer_a``) and why."""

    pair_id: str
    question: str
    better: str
    annotator: str
    note: str


def _key(pair_id: str, question: str) -> tuple[str, str]:
    # Questions are matched after collapsing whitespace and case: reply parsing may re-wrap them.
    return pair_id, re.sub(r"\s+", " ", question).strip().casefold()


def read_sample_preferences() -> list[SamplePreference]:
    """The bundled judgements, in file order.

    Raises:
        RecordError: an entry lacks a field or names an answer other than ``"Answer 1"`` / ``"Answer 2"``.
    """
    document = json.loads((sample_dir() / SAMPLE_PREFERENCES_FILE).read_text(encoding="utf-8"))
    out = []
    for index, entry in enumerate(document["preferences"]):
        rid = f"{entry.get('pair_id')}#{index}"
        for name in ("pair_id", "question", "better", "annotator", "note"):
            if not isinstance(entry.get(name), str) or not entry[name].strip():
                raise RecordError(rid, name, "missing or empty")
        if entry["better"] not in _ANSWERS:
            raise RecordError(rid, "better", f"expected one of {sorted(_ANSWERS)}, got {entry['better']!r}")
        out.append(SamplePreference(**{k: entry[k] for k in SamplePreference.__dataclass_fields__}))
    return out


def sample_preferences_sha256() -> str:
    """sha256 of the bundled file, recorded in the lineage of whatever is built from it."""
    import hashlib

    return hashlib.sha256((sample_dir() / SAMPLE_PREFERENCES_FILE).read_bytes()).hexdigest()


def load_sample_preferences(
    answer_pairs: Dataset | Iterable[Mapping[str, Any]],
    weight: float = 1.0,
    preferences: Iterable[SamplePreference] | None = None,
) -> Dataset:
    """Join the sample judgements with ``answer_pairs`` into ``preferences`` rows (``source="clinician"``).

    A row is made for every answer-pair question that has a judgement (matched on ``pair_id`` and the question,
    whitespace and case aside): ``id``, ``prompt`` and ``images`` come from the answer pair, ``chosen`` / ``rejected``
    are its ``answer_a`` / ``answer_b`` as the judgement says, ``annotator`` is the judgement's, ``weight`` the given
    one. Questions without a judgement (the sample covers the stand-in's answer pairs only) are left out and counted
    in a log line; so are judgements whose question is not in ``answer_pairs``.

    Args:
        answer_pairs: the answer-pairs dataset (or its rows); images stay as stored (bytes are not decoded).
        weight: the loss weight of every pair (the selector recipe overrides it with ``clinician_weight``).
        preferences: judgements to use instead of the bundled ones.

    Returns:
        A `Dataset` with exactly ``PREFERENCE_FEATURES``, in the order of ``answer_pairs`` (empty when nothing
        matches).
    """
    from datasets import Dataset, Image, List

    from vital.data.schemas import PREFERENCE_FEATURES, rows_to_dataset, validate_preference

    if not weight > 0:
        raise ValueError(f"weight must be positive, got {weight}")
    judged = {_key(p.pair_id, p.question): p for p in (preferences or read_sample_preferences())}
    if isinstance(answer_pairs, Dataset) and "images" in answer_pairs.column_names:
        answer_pairs = answer_pairs.cast_column("images", List(Image(decode=False)))
    rows, unmatched, used = [], 0, set()
    for pair in answer_pairs:
        key = _key(pair["pair_id"], pair["question"])
        judgement = judged.get(key)
        if judgement is None:
            unmatched += 1
            continue
        used.add(key)
        chosen = _ANSWERS[judgement.better]
        rejected = "answer_b" if chosen == "answer_a" else "answer_a"
        row = {
            "id": pair["id"],
            "prompt": pair["prompt"],
            "images": list(pair["images"] or []),
            "chosen": pair[chosen],
            "rejected": pair[rejected],
            "source": "clinician",
            "annotator": judgement.annotator,
            "weight": float(weight),
        }
        validate_preference(row)
        rows.append(row)
    logger.info(
        "sample preferences: %d joined, %d answer-pair question(s) without a judgement, %d judgement(s) unused",
        len(rows),
        unmatched,
        len(judged) - len(used),
    )
    return rows_to_dataset(rows, PREFERENCE_FEATURES)
