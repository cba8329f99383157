"""Bad-record handling shared by every converter and validator.

A bad record either raises a `RecordError` that names the record id and the field, or (``errors="skip"``) is put in
quarantine with the same information and counted. Nothing is dropped silently.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal


ErrorMode = Literal["raise", "skip"]


class RecordError(ValueError):
    """A record that breaks a data contract.

    The message always reads ``record '<id>', field '<field>': <reason>`` so that a user can find the record.
    """

    def __init__(self, record_id: Any, field: str, reason: str):
        self.record_id = "<unknown>" if record_id is None else str(record_id)
        self.field = field
        self.reason = reason
        super().__init__(f"record {self.record_id!r}, field {field!r}: {reason}")


@dataclass
class QuarantinedRecord:
    record_id: str
    field: str
    reason: str
    record: str  # JSON of the offending record (images replaced by their file name or a short marker)

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

    def to_rows(self) -> list[dict[str, str]]:
        return [r.to_dict() for r in self.records]

    def to_dataset(self):
        """The quarantine as a `datasets.Dataset` (columns record_id, field, reason, record), e.g. a `failures` split."""
        from datasets import Dataset

        from vital.data.schemas import QUARANTINE_FEATURES

        rows = self.to_rows()
        return Dataset.from_list(rows, features=QUARANTINE_FEATURES)


def _to_json(record: Any) -> str:
    if record is None:
        return ""

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
