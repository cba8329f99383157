"""Bad-record handling shared by every converter and validator.

A bad record either raises a `RecordError` that names the record id and the field, or (``errors="skip"``) is put in
quarantine with the same information and counted. Nothing is dropped silently.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal


ErrorMode = Literal["raise", "skip"]

_OBJECT_REPR = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")
"""An object's default repr inside a message (PIL: "cannot identify image file <_io.BytesIO object at 0x...>")."""


class RecordError(ValueError):
    """A record that breaks a data contract.

    The message always reads ``record '<id>', field '<field>': <reason>`` so that a user can find the record. Object
    reprs with a memory address are left out of the reason, so the same bad record gives the same reason (and the same
    quarantine row) on every run and in every process.
    """

    def __init__(self, record_id: Any, field: str, reason: str):
        self.record_id = "<unknown>" if record_id is None else str(record_id)
        self.field = field
        self.reason = _OBJECT_REPR.sub("", reason)
        super().__init__(f"record {self.record_id!r}, field {field!r}: {self.reason}")

    def __reduce__(self):  # picklable (DataLoader workers send them back): rebuilt from its fields, not its message
        return type(self), (self.record_id, self.field, self.reason)


@dataclass
class QuarantinedRecord:
    record_id: str
    field: str
    reason: str
    record: str  # JSON of the offending record (images replaced by a short marker), or the raw line as read

    def to_dict(self) -> dict[str, str]:
        return {"record_id": self.record_id, "field": self.field, "reason": self.reason, "record": self.record}


@dataclass
class Quarantine:
    """Collects bad records in ``skip`` mode, or raises at once in ``raise`` mode."""

    mode: ErrorMode = "raise"
    records: list[QuarantinedRecord] = field(default_factory=list)

    def __post_init__(self):
        if self.mode not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', got {self.mode!r}")

    def add(self, error: RecordError, record: Any = None) -> None:
        """Raise ``error`` in raise mode; otherwise keep it with the offending record."""
        if self.mode == "raise":
            raise error
        self.records.append(QuarantinedRecord(error.record_id, error.field, error.reason, _to_json(record)))

    def __len__(self) -> int:
        return len(self.records)

    def counts(self) -> dict[str, int]:
        """How many records were quarantined, by field."""
        return dict(Counter(r.field for r in self.records))

    def counts_by_reason(self) -> dict[str, int]:
        """How many records were quarantined, by kind of reason and field, e.g. ``{"image file not found (image): 3}``
        (the kind is the reason up to its first ``:`` or ``(``; list indices in fields are dropped), most first."""
        counts = Counter(f"{reason_kind(r.reason)} ({_INDEX.sub('[]', r.field)})" for r in self.records)
        return dict(counts.most_common())

    def summary(self) -> str:
        """`counts_by_reason` as one line for a log: ``"image file not found (image): 3, duplicate id (id): 1"``."""
        return ", ".join(f"{reason}: {n}" for reason, n in self.counts_by_reason().items())

    def extend(self, other: Quarantine) -> None:
        """Append ``other``'s records (e.g. a later check's) to this quarantine."""
        self.records.extend(other.records)

    def to_rows(self) -> list[dict[str, str]]:
        return [r.to_dict() for r in self.records]

    def to_dataset(self, **columns: str):
        """The quarantine as a `datasets.Dataset` (columns record_id, field, reason, record), e.g. a `failures` split
        or a ``quarantine`` config. ``columns`` adds constant string columns (e.g. ``config="80k"``)."""
        from datasets import Dataset, Features, Value

        from vital.data.schemas import QUARANTINE_FEATURES

        features = Features({**QUARANTINE_FEATURES, **{name: Value("string") for name in columns}})
        rows = [{**row, **columns} for row in self.to_rows()]
        return Dataset.from_dict({name: [row[name] for row in rows] for name in features}, features=features)


_INDEX = re.compile(r"\[\d+\]")


def reason_kind(reason: str) -> str:
    """The kind of a quarantine reason: its text up to the first ``:`` or ``(`` (``"image file not found"``)."""
    return re.split(r"[:(]", reason, maxsplit=1)[0].strip() or reason


def _to_json(record: Any) -> str:
    if record is None:
        return ""
    if isinstance(record, str):  # a raw line that could not be read as a record: kept as it was
        return record

    def default(obj):
        if hasattr(obj, "filename") and hasattr(obj, "size"):  # a PIL image
            return f"<image {getattr(obj, 'filename', '') or obj.size}>"
        if isinstance(obj, bytes | bytearray):
            return f"<{len(obj)} bytes>"
        return repr(obj)

    try:
        return json.dumps(record, default=default, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        return repr(record)


def push_quarantine(hub: Any, quarantine: Any, repo_id: str, revision: str = "main", private: bool | None = None):
    """Push the quarantined rows as the repo's ``quarantine`` config, or delete a stale one when there are none.

    ``quarantine`` is a `Quarantine` or a `datasets.Dataset` of its rows. Returns the `PushResult` (None when nothing
    was there to push or delete).
    """
    dataset = quarantine.to_dataset() if isinstance(quarantine, Quarantine) else quarantine
    if len(dataset):
        return hub.push_dataset(dataset, repo_id, "quarantine", "train", revision, private=private)
    try:
        return hub.delete_config(repo_id, "quarantine", revision)
    except Exception:  # no repo or branch yet: nothing stale to delete
        return None
