"""The official clinician demonstrations, read from a Python file without running it.

BioMed-VITAL keeps its clinician-written demonstrations as a list literal in its generation code (``fs = [{...}, ...]``:
``id``, ``imgs`` (the image file), ``domain`` flags -- one or more true --, ``conversations`` without ``<image>``,
``fig_caption``, ``fig_label``, ``pair_id``, ``pmid``, ``in_text_mention`` ...). `read_demos_literal` parses the file
with `ast` and evaluates only that literal (`ast.literal_eval`): no import, no code of the file ever runs.
`demo_records_to_rows` turns the records into ``demos`` rows (`DEMO_FEATURES` plus ``pair_id``, ``modalities``,
``domain`` and ``extra`` for the keys the columns do not hold).
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from datasets import Dataset, Features, List, Value

from vital.data.errors import ErrorMode, Quarantine, RecordError
from vital.data.llava import (
    DOMAIN,
    DOMAIN_FLAGS,
    DOMAIN_MODALITY,
    _parse_domain,
    _parse_mentions,
    _record_id,
    _require_mapping,
    _require_str,
    conversations_to_messages,
    load_image_file,
    modality_from_domain,
)
from vital.data.schemas import DEMO_FEATURES, image_part, validate_messages


IMPORTED_DEMO_FEATURES = Features(
    {
        **DEMO_FEATURES,
        "pair_id": Value("string"),
        "modalities": List(Value("string")),  # every true domain flag, in the flags' order
        "domain": DOMAIN,
        "extra": Value("string"),  # JSON of the record's other keys (fig_id, graphic_ref, ...)
    }
)

_DEMO_KEYS = ("id", "imgs", "image", "domain", "conversations", "fig_caption", "fig_label", "pair_id", "pmid",
              "in_text_mention")  # fmt: skip


def read_demos_literal(path: str | os.PathLike, variable: str | None = None) -> list[dict[str, Any]]:
    """The demonstrations list assigned in the Python file ``path``, evaluated as a literal, never executed.

    Args:
        path: a ``.py`` file (e.g. a copy of BioMed-VITAL's ``doctor_few_shot_examples.py``).
        variable: the assigned name (``fs`` upstream); by default the first top-level assignment of a list literal
            whose items are dicts with ``conversations``.

    Raises:
        ValueError: the file does not parse, the name is not assigned, or its value is not a plain literal (names,
            calls and other code are refused by `ast.literal_eval`), naming the file and line.
    """
    path = Path(path)
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a Python file that parses ({e})") from e
    candidates = []
    for node in tree.body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        if names and node.value is not None and isinstance(node.value, ast.List | ast.Tuple):
            candidates.append((names, node))
    for names, node in candidates:
        if variable is not None and variable not in names:
            continue
        try:
            value = ast.literal_eval(node.value)
        except (ValueError, SyntaxError) as e:
            if variable is not None:
                raise ValueError(f"{path}, line {node.lineno}: {variable!r} is not a plain literal ({e})") from e
            continue
        if variable is not None or (value and all(isinstance(v, dict) and "conversations" in v for v in value)):
            return list(value)
    what = (
        f"an assignment to {variable!r}" if variable else "list literal of demonstrations (dicts with 'conversations')"
    )
    raise ValueError(f"{path}: no {what} at the top level")


def demo_record_to_row(
    record: Any, image_dir: str | os.PathLike | None, curated_by: str, *, index: int | None = None
) -> dict[str, Any]:
    """One official demonstration as an `IMPORTED_DEMO_FEATURES` row; raises `RecordError` naming id and field."""
    rid = _record_id(record, "id", index)
    _require_mapping(record, rid)
    if "id" not in record:
        raise RecordError(rid, "id", "missing field")
    demo_id = record["id"]
    if isinstance(demo_id, bool) or not isinstance(demo_id, int | str) or not str(demo_id).strip():
        raise RecordError(rid, "id", f"expected a non-empty string or an integer, got {demo_id!r}")
    image_key = "imgs" if "imgs" in record else "image"
    image_file = _require_str(record, image_key, rid)
    caption = _require_str(record, "fig_caption", rid)
    extra = {k: v for k, v in record.items() if k not in _DEMO_KEYS}
    domain = _parse_domain(record, rid, extra)
    modalities = [DOMAIN_MODALITY[f] for f in DOMAIN_FLAGS if domain and domain.get(f)]
    mentions, _, _ = _parse_mentions(record.get("in_text_mention"), rid)
    messages = conversations_to_messages(record.get("conversations"), rid, None)
    if any(p["type"] == "image" for m in messages for p in m["content"]):
        if sum(p["type"] == "image" for m in messages for p in m["content"]) != 1:
            raise RecordError(rid, "conversations", "more than one <image> placeholder")
    else:  # the official demos carry no <image>: the image goes before the first question, as in training
        next(m for m in messages if m["role"] == "user")["content"].insert(0, image_part())
    validate_messages(messages, rid, "messages", n_images=1)
    fig_label = record.get("fig_label")
    pmid = record.get("pmid")
    return {
        "id": str(demo_id),
        "image": load_image_file(image_dir, image_file, rid, image_key),
        "caption": caption,
        "fig_label": fig_label if isinstance(fig_label, str) else "",
        "mentions": mentions,
        "modality": modality_from_domain(domain),
        "source": {
            "origin": "pmc",
            "pmid": "" if pmid is None else str(pmid),
            "url": "",
            "license": "",
            "citation": "",
        },
        "messages": messages,
        "cluster": -1,
        "curated_by": curated_by,
        "pair_id": str(record.get("pair_id") or ""),
        "modalities": modalities,
        "domain": domain,
        "extra": json.dumps(extra, ensure_ascii=False),
    }


def demo_records_to_rows(
    records: list[Any], image_dir: str | os.PathLike | None, curated_by: str, errors: ErrorMode = "raise"
) -> tuple[Dataset, Quarantine]:
    """The demonstrations as a ``demos`` dataset and the quarantine of the refused ones (repeated ids included)."""
    quarantine = Quarantine(errors)
    rows, seen = [], {}
    for index, record in enumerate(records):
        try:
            row = demo_record_to_row(record, image_dir, curated_by, index=index)
            if row["id"] in seen:
                raise RecordError(row["id"], "id", f"duplicate id: demo #{index} repeats demo #{seen[row['id']]}")
            seen[row["id"]] = index
            rows.append(row)
        except RecordError as e:
            quarantine.add(e, record if isinstance(record, Mapping) else repr(record))
    dataset = Dataset.from_dict(
        {k: [r[k] for r in rows] for k in IMPORTED_DEMO_FEATURES}, features=IMPORTED_DEMO_FEATURES
    )
    return dataset, quarantine


__all__ = ["IMPORTED_DEMO_FEATURES", "demo_record_to_row", "demo_records_to_rows", "read_demos_literal"]
