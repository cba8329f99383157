r"""Converters between the released LLaVA-style JSON records and the project's datasets (``docs/design.md``,
Artifacts and schemas).

Two formats come in, both as a JSON list (``.json``, parsed one record at a time), JSON lines (``.jsonl``), a JSON
``{group: [records]}`` object (LLaVA-Med's released figure-caption file: ``{domain: [records]}``, read as upstream reads
it, with ``itertools.zip_longest`` over the groups; a domain key fills ``modality``) or a Python list of dicts.

**A. LLaVA-Med figure-caption records** (the PMC figure-caption pairs LLaVA-Med and BioMed-VITAL start from) become
``pairs`` (`PAIR_FEATURES` plus the columns in `LLAVA_MED_PAIR_FEATURES` that make the way back lossless)::

    {"pair_id": "PMC1234567_F2", "pmid": "1234567", "image": "PMC1234567_F2.jpg",
     "fig_caption": "Axial CT showing a mass ...", "fig_label": "F2",
     "in_text_mention": [{"tokens": "CT revealed a mass (Fig. 2).", "ppl": 12.3}],
     "domain": {"chest_xray": false, "mri": false, "ct_scan": true, "histology": false, "gross": false}}

    ->  id="PMC1234567_F2", image=<PMC1234567_F2.jpg, bytes embedded>, caption="Axial CT showing a mass ...",
        fig_label="F2", mentions=["CT revealed a mass (Fig. 2)."], modality="ct",
        source={"origin": "pmc", "pmid": "1234567", "url": "", "license": "", "citation": ""}
        + image_file, domain, mention_format, mention_extra, absent_keys, extra (for the way back)

**B. Released BioMed-VITAL / LLaVA instruction records** become TRL conversational rows (``messages`` with typed
parts + ``images``), the form `SFTTrainer` reads for vision data, and back::

    {"id": "PMC1234567_F2", "image": "PMC1234567_F2.jpg",
     "conversations": [{"from": "human", "value": "<image>\nWhat does the scan show?"},
                       {"from": "gpt", "value": "An axial CT slice with ..."}]}

    ->  id="PMC1234567_F2", images=[<PMC1234567_F2.jpg, bytes embedded>], modality="other",
        messages=[{"role": "user", "content": [{"type": "image", "text": None},
                                               {"type": "text", "text": "What does the scan show?"}]},
                  {"role": "assistant", "content": [{"type": "text", "text": "An axial CT slice with ..."}]}]
        + image_file, domain, extra (for the way back)

Round trips
    ``pairs_to_llava_med_records(llava_med_records_to_pairs(records, dir).dataset) == records`` and
    ``messages_to_llava(llava_to_messages(records, dir).dataset) == records``, key order included (``key_order``;
    each turn's extra keys and order in ``turn_layout``; each mention object's in ``mention_extra``), so
    `export_llava` / `export_llava_med` write the source file again byte for byte given the same `json.dump` options,
    ``{domain: [records]}`` layout included. Images are embedded as the file's bytes (checked to decode with PIL), so a dataset is
    self-contained and its decoded pixels are the source file's; writing images back writes those same bytes.
    Keys the typed columns cannot hold verbatim (unknown top-level keys, a ``pmid`` given as a number, a ``null``
    ``fig_label``, an integer ``id`` ...) are kept in the ``extra`` JSON column and restored on the way back.

Records without a placeholder
    BioMed-VITAL's generator writes image records whose conversation has no ``<image>``. By default
    (``image_placement="first_turn"``) the image part goes first in the first human turn -- where LLaVA's
    preprocessing puts ``"<image>\n"`` -- and ``image_placeholder="inserted"`` makes the way back leave it out again;
    ``"require"`` refuses such records.

The one normalisation: the ``<image>`` placeholder's separator
    The placeholder becomes an image part at the same position, and exactly ONE newline on each side of it that
    separates it from text (the ``"<image>\n"`` prefix / ``"\n<image>"`` suffix convention) is removed from the text
    parts. On the way back every boundary between the image and text gets one ``"\n"`` again. Hence a placeholder
    glued to text without a newline (``"<image>What is this?"``, ``"See<image>"``) comes back with a ``"\n"``
    inserted (``"<image>\nWhat is this?"``) -- the same thing LLaVA's own preprocessing does, which puts
    ``"<image>\n"`` in front of the stripped question. Only ``"\n"`` separates: a space or ``"\r\n"`` right after
    the placeholder counts as glued (``"<image> Q"`` -> ``"<image>\n Q"``); the normalised form is a fixed point.
    Every other string round-trips byte for byte: extra newlines (``"<image>\n\nQ"``), multi-line values, unicode,
    leading/trailing spaces, a bare ``"<image>"``, text-only turns.

Errors
    A bad record raises `RecordError` naming the record id (``"#<index>"`` when the record has no usable id) and the
    input field, e.g. ``record 'PMC1_F1', field 'conversations[3].from': unknown speaker 'user' ...``. With
    ``errors="skip"`` it goes into the returned `Quarantine` instead (``quarantine.counts_by_reason()``,
    ``quarantine.to_dataset()`` for a ``quarantine`` config); nothing is dropped silently. A repeated id, an image path
    outside ``image_dir`` (absolute, ``../``) and a JSON-lines line that is not UTF-8 (named by its line number) are
    such errors too.

Composition
    The per-record functions (`llava_record_to_row`, `llava_med_record_to_pair`, `row_to_llava`,
    `pair_to_llava_med_record`) and the message-level ones (`conversations_to_messages`,
    `messages_to_conversations`) are what the dataset-level functions map; other stages can call them directly.
    Datasets are written to disk in batches as records are converted (`Dataset.from_generator`), so memory stays flat
    in the number of records (``benchmarks/bench_import.py``).
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, Features, Image, List, Value

from vital.data.errors import ErrorMode, Quarantine, RecordError
from vital.data.schemas import (
    MESSAGES,
    PAIR_FEATURES,
    _describe,
    count_image_parts,
    image_part,
    text_part,
    validate_image,
    validate_messages,
)


IMAGE_TOKEN = "<image>"
"""The image placeholder of LLaVA conversations."""

DOMAIN_FLAGS = ("chest_xray", "mri", "ct_scan", "histology", "gross")
"""The LLaVA-Med ``domain`` flags, in the order that decides the modality."""

DOMAIN_MODALITY = {
    "chest_xray": "chest_xray",
    "mri": "mri",
    "ct_scan": "ct",
    "histology": "histology",
    "gross": "gross",
}

DOMAIN = {flag: Value("bool") for flag in DOMAIN_FLAGS}
"""The ``domain`` column: a nullable struct (null: the record had no ``domain``; a null flag: the flag was absent)."""

SPEAKER_ROLES = {"system": "system", "human": "user", "gpt": "assistant"}
ROLE_SPEAKERS = {role: speaker for speaker, role in SPEAKER_ROLES.items()}

LLAVA_MED_KEYS = ("pair_id", "pmid", "image", "fig_caption", "fig_label", "in_text_mention", "domain")
LLAVA_KEYS = ("id", "image", "conversations", "domain")

LLAVA_MED_PAIR_FEATURES = Features(
    {
        **PAIR_FEATURES,
        "image_file": Value("string"),  # the record's "image" key; null when absent (the file was f"{pair_id}.jpg")
        "domain": DOMAIN,
        "mention_format": Value("string"),  # "strings" or "tokens"
        "mention_extra": List(Value("string")),  # "tokens" format: JSON of each mention object's other keys
        "absent_keys": List(Value("string")),  # optional keys the record lacked (pmid, fig_label, in_text_mention)
        "extra": Value("string"),  # JSON object of keys restored verbatim on the way back
        "key_order": List(Value("string")),  # the record's top-level keys in file order
        "domain_key": Value("string"),  # the top-level key of a {domain: [records]} file; null for a list
    }
)
"""Features of the pairs made from LLaVA-Med records: the pairs contract plus what the way back needs."""

LLAVA_MESSAGE_FEATURES = Features(
    {
        "id": Value("string"),
        "images": List(Image()),
        "messages": MESSAGES,
        "modality": Value("string"),
        "image_file": Value("string"),  # the record's "image" key; null for a text-only record
        "domain": DOMAIN,
        "extra": Value("string"),  # JSON object of keys restored verbatim on the way back
        "key_order": List(Value("string")),  # the record's top-level keys in file order
        "turn_layout": List(Value("string")),  # per turn: "" for {"from", "value"}, else its keys and extra values
        "image_placeholder": Value("string"),  # "inline" (<image> in the text), "inserted" (none: placed), null
    }
)
"""Features of the TRL conversational rows made from LLaVA instruction records."""


@dataclass
class ConversionResult:
    """What a dataset-level converter returns: the converted rows and the quarantine of the bad records.

    Unpacks as ``dataset, quarantine = result``.
    """

    dataset: Dataset
    quarantine: Quarantine

    def __iter__(self) -> Iterator[Any]:
        return iter((self.dataset, self.quarantine))


# --------------------------------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------------------------------
def modality_from_domain(domain: Mapping[str, Any] | None) -> str:
    """The modality of the first true flag in the order chest_xray, mri, ct_scan (``ct``), histology, gross."""
    for flag in DOMAIN_FLAGS:
        if domain and domain.get(flag) is True:
            return DOMAIN_MODALITY[flag]
    return "other"


def resolve_image_path(image_dir: str | os.PathLike | None, name: str, record_id: Any, field: str = "image") -> Path:
    """``name`` under ``image_dir`` (the working directory when None), refusing any name that leaves the folder.

    An absolute path, a ``..`` component, or a name that resolves (through symlinks) outside the folder raises
    `RecordError`: a record never makes the converter read a file the user did not hand over. Sub-paths such as
    ``PMC123/fig1.jpg`` are fine.
    """
    folder = Path(image_dir) if image_dir is not None else Path(".")
    pure = Path(name)
    if pure.is_absolute() or name.startswith(("/", "\\")) or ".." in pure.parts or ".." in name.split("\\"):
        raise RecordError(record_id, field, f"outside the image folder: {name!r} leaves {folder}")
    path = folder / pure
    root = folder.resolve()
    try:
        path.resolve().relative_to(root)
    except ValueError as e:
        raise RecordError(record_id, field, f"outside the image folder: {name!r} resolves outside {folder}") from e
    return path


def domain_key_modality(key: str | None) -> str | None:
    """The modality a ``{domain: [records]}`` key names (``ct_scan``/``CT`` -> ``ct``, ``Chest X-ray`` ->
    ``chest_xray``, ...), or None for a key that names none of the five domains."""
    if not key:
        return None
    norm = "_".join(key.strip().lower().replace("-", " ").replace("_", " ").split())
    norm = {"chest_x_ray": "chest_xray", "cxr": "chest_xray", "ct_scan": "ct", "histopathology": "histology"}.get(
        norm, norm
    )
    return norm if norm in DOMAIN_MODALITY.values() else None


def _in_key_order(record: dict[str, Any], order: Any) -> dict[str, Any]:
    """``record`` with its keys in ``order`` (keys not listed follow in their current order)."""
    if not order:
        return record
    out = {key: record[key] for key in order if key in record}
    out.update((key, value) for key, value in record.items() if key not in out)
    return out


def load_image_file(image_dir: str | os.PathLike | None, name: str, record_id: Any, field: str = "image") -> dict:
    """Read an image file into an embeddable ``{"bytes", "path"}`` cell, after checking that it decodes in full.

    ``path`` is ``name`` as given (relative to ``image_dir``), never a machine-specific absolute path. The bytes are
    the file's, so decoded pixels equal the source file's. A missing, unreadable, empty, corrupt or truncated file, or
    a name outside ``image_dir`` (`resolve_image_path`), raises `RecordError` naming ``field``.
    """
    from PIL import Image as PILImage

    path = resolve_image_path(image_dir, name, record_id, field)
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise RecordError(record_id, field, f"image file not found: {path}") from e
    except OSError as e:
        raise RecordError(record_id, field, f"cannot read image file {path}: {e}") from e
    if not data:
        raise RecordError(record_id, field, f"empty image file: {path}")
    try:
        validate_image({"bytes": data, "path": None}, record_id, field)
    except RecordError as e:
        raise RecordError(record_id, field, f"{e.reason} in {path}") from e
    try:  # verify() misses truncated files; decode once so that training never meets a broken image
        with PILImage.open(io.BytesIO(data)) as im:
            im.load()
    except Exception as e:  # PIL raises many types for corrupt data
        raise RecordError(record_id, field, f"corrupt image ({type(e).__name__}: {e}) in {path}") from e
    return {"bytes": data, "path": name}


def _write_image(cell: Any, path: Path, record_id: Any, field: str, keep_bytes: bool = False) -> None:
    """Write an image cell to ``path``: its own bytes when ``keep_bytes`` (the name is the source's own) or when their
    format fits the suffix, else re-encoded by PIL. A PNG that came in under a ``.jpg`` name goes back as that PNG."""
    from PIL import Image as PILImage

    path.parent.mkdir(parents=True, exist_ok=True)
    data = None
    if isinstance(cell, Mapping):
        data = cell.get("bytes")
        if data is None and cell.get("path"):
            data = Path(cell["path"]).read_bytes()
        if data is None:
            raise RecordError(record_id, field, "image cell without bytes or path")
    elif not isinstance(cell, PILImage.Image):
        raise RecordError(record_id, field, f"expected an image, got {_describe(cell)}")
    target = PILImage.registered_extensions().get(path.suffix.lower())
    if data is None:
        _save_image(cell, path, target)
        return
    if keep_bytes:
        path.write_bytes(data)
        return
    with PILImage.open(io.BytesIO(data)) as image:
        if target is None or image.format == target:
            path.write_bytes(data)
        else:
            _save_image(image, path, target)


def _save_image(image: Any, path: Path, target: str | None) -> None:
    try:
        image.save(path, format=target)
    except OSError:  # e.g. RGBA or P as JPEG
        image.convert("RGB").save(path, format=target)


def _record_id(record: Any, key: str, index: int | None) -> str | None:
    if isinstance(record, Mapping):
        value = record.get(key)
        if (isinstance(value, str) and value.strip()) or (isinstance(value, int) and not isinstance(value, bool)):
            return str(value)
    return f"#{index}" if index is not None else None


def _require_mapping(record: Any, record_id: Any) -> None:
    if not isinstance(record, Mapping):
        raise RecordError(record_id, "record", f"expected a JSON object, got {_describe(record)}")


def _require_str(record: Mapping[str, Any], key: str, record_id: Any) -> str:
    if key not in record:
        raise RecordError(record_id, key, "missing field")
    value = record[key]
    if not isinstance(value, str):
        raise RecordError(record_id, key, f"wrong type: expected a string, got {_describe(value)}")
    if not value.strip():
        raise RecordError(record_id, key, "empty string")
    return value


def _parse_domain(record: Mapping[str, Any], record_id: Any, extra: dict[str, Any]) -> dict[str, bool | None] | None:
    """The ``domain`` struct; None when absent. A JSON null is stored as None and restored from ``extra``."""
    if "domain" not in record:
        return None
    domain = record["domain"]
    if domain is None:
        extra["domain"] = None
        return None
    if not isinstance(domain, Mapping):
        raise RecordError(record_id, "domain", f"wrong type: expected an object of flags, got {_describe(domain)}")
    for key, value in domain.items():
        if key not in DOMAIN_FLAGS:
            raise RecordError(record_id, f"domain.{key}", f"unknown domain flag (expected {', '.join(DOMAIN_FLAGS)})")
        if not isinstance(value, bool):
            raise RecordError(
                record_id, f"domain.{key}", f"wrong type: expected true or false, got {_describe(value)}"
            )
    return {flag: domain.get(flag) for flag in DOMAIN_FLAGS}


def _domain_back(domain: Mapping[str, Any] | None) -> dict[str, bool] | None:
    if domain is None:
        return None
    return {flag: value for flag, value in domain.items() if value is not None}


def _dump_extra(extra: Mapping[str, Any], record_id: Any) -> str:
    for key, value in extra.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError) as e:
            raise RecordError(record_id, key, f"value cannot be stored as JSON ({e})") from e
    return json.dumps(extra, ensure_ascii=False)


def _load_extra(row: Mapping[str, Any]) -> dict[str, Any]:
    text = row.get("extra")
    return json.loads(text) if text else {}


@dataclass
class SourceRecord:
    """One record as read from its source: position, the record (or the raw line), the read error, the group key."""

    index: int
    record: Any
    error: RecordError | None = None
    group: str | None = None  # the top-level key of a {domain: [records]} file


def _first_bad_utf8(path: Path) -> tuple[int, int, bytes]:
    """(line number, byte column, the bad bytes) of the first invalid UTF-8 sequence in ``path``."""
    with path.open("rb") as f:
        for line_no, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                return line_no, e.start + 1, line[e.start : e.end]
    return 0, 0, b""


def iter_json_array(path: str | os.PathLike, chunk_chars: int = 1 << 20) -> Iterator[Any]:
    """The elements of a file holding one JSON array, parsed one at a time (memory bounded by the largest element).

    Raises ValueError naming the file and the line for malformed JSON or bytes that are not UTF-8.
    """
    path = Path(path)
    decoder = json.JSONDecoder()
    with path.open(encoding="utf-8") as f:
        buf, pos, eof, consumed_lines = "", 0, False, 1

        def more() -> bool:
            nonlocal buf, pos, eof, consumed_lines
            if eof:
                return False
            try:
                chunk = f.read(chunk_chars)
            except UnicodeDecodeError as e:
                line, column, bad = _first_bad_utf8(path)
                raise ValueError(f"{path}: line {line}, byte {column}: not UTF-8 ({bad!r}): {e.reason}") from e
            consumed_lines += buf.count("\n", 0, pos)
            buf, pos = buf[pos:] + chunk, 0
            eof = not chunk
            return bool(chunk)

        def skip_ws() -> str:
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    pos += 1
                if pos < len(buf):
                    return buf[pos]
                if not more():
                    return ""

        def fail(message: str) -> ValueError:
            return ValueError(f"{path}: line {consumed_lines + buf.count(chr(10), 0, pos)}: {message}")

        if skip_ws() != "[":
            raise fail("expected a JSON list of records")
        pos += 1
        first = True
        while True:
            char = skip_ws()
            if char == "]":
                pos += 1
                if skip_ws():
                    raise fail("extra data after the list")
                return
            if not first:
                if char != ",":
                    raise fail(f"expected ',' or ']' between records, got {char!r}")
                pos += 1
                skip_ws()
            while True:
                try:
                    element, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError as e:
                    if more():
                        continue
                    raise fail(f"invalid JSON ({e.msg})") from e
                # a number (or a literal) that ends the buffer may continue in the next chunk: look at what follows
                if not eof and (end >= len(buf) or buf[end] not in " \t\r\n,]") and more():
                    continue
                break
            pos = end
            first = False
            yield element


def _iter_records(records_or_path: Any) -> Iterator[SourceRecord]:
    """The records of a list, a ``.jsonl`` file, a ``.json`` list (streamed) or a ``.json`` ``{group: [records]}``.

    A JSON-lines line that does not parse, or is not UTF-8, comes as a `SourceRecord` with ``error`` set (naming the
    line) so that skip mode can quarantine that line alone. A ``{group: [records]}`` file is read the way LLaVA-Med
    reads it (``itertools.zip_longest`` over the groups' lists: one record of each group in turn).
    """
    if isinstance(records_or_path, str | os.PathLike):
        path = Path(records_or_path)
        if path.suffix == ".jsonl":
            index = 0
            with path.open("rb") as f:
                for line_no, raw in enumerate(f, start=1):
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError as e:
                        bad = raw[e.start : e.end]
                        text = raw.decode("utf-8", errors="backslashreplace").rstrip("\r\n")
                        reason = f"not UTF-8: byte {e.start + 1} of the line ({bad!r}, {e.reason}) in {path}"
                        yield SourceRecord(index, text, RecordError(f"line {line_no}", "record", reason))
                        index += 1
                        continue
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as e:
                        yield SourceRecord(
                            index,
                            line.rstrip("\r\n"),
                            RecordError(f"line {line_no}", "record", f"invalid JSON: {e} in {path}"),
                        )
                    else:
                        yield SourceRecord(index, record)
                    index += 1
            return
        if path.suffix != ".json":
            raise ValueError(f"expected a .json or .jsonl file, got {path}")
        with path.open("rb") as f:
            head = f.read(4096).lstrip(b" \t\r\n\xef\xbb\xbf")
        if head.startswith(b"{"):
            yield from _iter_groups(_read_json(path), str(path))
            return
        for index, record in enumerate(iter_json_array(path)):
            yield SourceRecord(index, record)
        return
    if isinstance(records_or_path, Mapping):
        if records_or_path and all(isinstance(v, list) for v in records_or_path.values()):
            yield from _iter_groups(records_or_path, "the records")
            return
        raise TypeError("expected a list of records, a {group: [records]} mapping or a path, got a single record")
    if not isinstance(records_or_path, Iterable):
        raise TypeError(f"expected a list of records or a path to .json/.jsonl, got {type(records_or_path).__name__}")
    for index, record in enumerate(records_or_path):
        yield SourceRecord(index, record)


def _read_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except UnicodeDecodeError as e:
        line, column, bad = _first_bad_utf8(path)
        raise ValueError(f"{path}: line {line}, byte {column}: not UTF-8 ({bad!r}): {e.reason}") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: line {e.lineno}, column {e.colno}: invalid JSON ({e.msg})") from e


def _iter_groups(groups: Any, where: str) -> Iterator[SourceRecord]:
    if not isinstance(groups, Mapping):
        raise ValueError(
            f"{where}: expected a JSON list of records or an object of lists, got {type(groups).__name__}"
        )
    for key, value in groups.items():
        if not isinstance(value, list):
            raise ValueError(f"{where}: group {key!r} must hold a list of records, got {type(value).__name__}")
    index = 0
    keys = list(groups)
    for cycle in itertools.zip_longest(*groups.values(), fillvalue=_MISSING):
        for key, record in zip(keys, cycle, strict=True):
            if record is not _MISSING:
                yield SourceRecord(index, record, group=key)
                index += 1


_MISSING = object()


def _convert(
    records_or_path: Any,
    to_row,
    features: Features,
    errors: ErrorMode,
    id_column: str = "id",
    id_field: str = "id",
) -> ConversionResult:
    """Convert records one at a time into an on-disk Arrow dataset (memory flat in the number of records).

    A record whose id repeats an accepted record's id is refused (``id_field``), naming both positions.
    """
    import uuid

    quarantine = Quarantine(errors)
    state: dict[str, Any] = {"error": None, "rows": 0}
    seen: dict[str, int] = {}

    def generate():
        try:
            for item in _iter_records(records_or_path):
                try:
                    if item.error is not None:
                        raise item.error
                    row = to_row(item.record, index=item.index, group=item.group)
                    first = seen.get(row[id_column])
                    if first is not None:
                        raise RecordError(
                            row[id_column], id_field, f"duplicate id: record #{item.index} repeats record #{first}"
                        )
                    seen[row[id_column]] = item.index
                except RecordError as e:
                    quarantine.add(e, item.record)  # raises it again in raise mode
                    continue
                state["rows"] += 1
                yield row
        except Exception as e:  # kept and raised as it is below, not wrapped by `datasets`
            state["error"] = e

    try:
        dataset = Dataset.from_generator(generate, features=features, fingerprint=uuid.uuid4().hex)
    except Exception:
        if state["error"] is None and state["rows"]:
            raise
        dataset = None  # no rows (datasets cannot build an empty split from a generator)
    if state["error"] is not None:
        raise state["error"]
    if dataset is None or not state["rows"]:
        dataset = Dataset.from_dict({name: [] for name in features}, features=features)
    return ConversionResult(dataset, quarantine)


def _iter_rows(dataset_or_rows: Any, image_columns: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Rows of a dataset with undecoded image columns (so the original bytes are written back), or of a list."""
    if isinstance(dataset_or_rows, Dataset):
        for column, feature in image_columns.items():
            if column in dataset_or_rows.features:
                dataset_or_rows = dataset_or_rows.cast_column(column, feature)
    yield from dataset_or_rows


# --------------------------------------------------------------------------------------------------------------------
# A. LLaVA-Med figure-caption records <-> pairs
# --------------------------------------------------------------------------------------------------------------------
def llava_med_record_to_pair(
    record: Any, image_dir: str | os.PathLike | None, *, index: int | None = None, group: str | None = None
) -> dict:
    """One LLaVA-Med figure-caption record as a `LLAVA_MED_PAIR_FEATURES` row; raises `RecordError`.

    Args:
        record: the record (see the module docstring).
        image_dir: the folder its image is resolved under: the record's ``image`` key, else ``f"{pair_id}.jpg"``.
        index: the record's position, used as its id (``"#<index>"``) in errors when it has no ``pair_id``.
        group: the top-level key the record was listed under in a ``{domain: [records]}`` file; a known domain name
            (`domain_key_modality`) sets the modality, ahead of the record's own flags.
    """
    rid = _record_id(record, "pair_id", index)
    _require_mapping(record, rid)
    extra = {key: value for key, value in record.items() if key not in LLAVA_MED_KEYS}
    absent = [key for key in ("pmid", "fig_label", "in_text_mention") if key not in record]
    pair_id = _require_str(record, "pair_id", rid)

    pmid = record.get("pmid")
    if pmid is None or (isinstance(pmid, int) and not isinstance(pmid, bool)):
        if "pmid" in record:
            extra["pmid"] = pmid
        pmid = "" if pmid is None else str(pmid)
    elif not isinstance(pmid, str):
        raise RecordError(rid, "pmid", f"wrong type: expected a string or an integer, got {_describe(pmid)}")

    caption = _require_str(record, "fig_caption", rid)
    fig_label = record.get("fig_label")
    if fig_label is None:
        if "fig_label" in record:
            extra["fig_label"] = None
        fig_label = ""
    elif not isinstance(fig_label, str):
        raise RecordError(rid, "fig_label", f"wrong type: expected a string, got {_describe(fig_label)}")

    if "in_text_mention" in record:
        mentions, mention_format, mention_extra = _parse_mentions(record["in_text_mention"], rid)
    else:
        mentions, mention_format, mention_extra = [], "strings", []

    image_file = None
    if "image" in record:
        image_file = _require_str(record, "image", rid)
    domain = _parse_domain(record, rid, extra)
    image = load_image_file(image_dir, image_file or f"{pair_id}.jpg", rid, "image")
    return {
        "id": pair_id,
        "image": image,
        "caption": caption,
        "fig_label": fig_label,
        "mentions": mentions,
        "modality": domain_key_modality(group) or modality_from_domain(domain),
        "source": {"origin": "pmc", "pmid": pmid, "url": "", "license": "", "citation": ""},
        "image_file": image_file,
        "domain": domain,
        "mention_format": mention_format,
        "mention_extra": mention_extra,
        "absent_keys": absent,
        "extra": _dump_extra(extra, rid),
        "key_order": list(record),
        "domain_key": group,
    }


def _parse_mentions(mentions: Any, record_id: Any) -> tuple[list[str], str, list[str]]:
    """``in_text_mention`` as (sentences, format, per-mention layout), in every shape LLaVA-Med files use.

    Formats: ``"strings"`` (a list of strings), ``"tokens"`` (a list whose items are objects with ``tokens`` -- and
    often ``entities`` -- or strings: the layout holds each object's JSON with ``tokens`` as null, keeping its key order
    and other keys, or ``""`` for a plain string), ``"string"`` (one string) and ``"null"``.
    """
    field = "in_text_mention"
    if mentions is None:
        return [], "null", []
    if isinstance(mentions, str):
        return [mentions], "string", []
    if not isinstance(mentions, list):
        raise RecordError(
            record_id, field, f"wrong type: expected null, a string or a list, got {_describe(mentions)}"
        )
    if all(isinstance(m, str) for m in mentions):
        return list(mentions), "strings", []
    sentences, layout = [], []
    for i, mention in enumerate(mentions):
        if isinstance(mention, str):
            sentences.append(mention)
            layout.append("")
            continue
        if not isinstance(mention, Mapping):
            raise RecordError(
                record_id, f"{field}[{i}]", f"expected a string or an object with 'tokens', got {_describe(mention)}"
            )
        tokens = mention.get("tokens")
        if not isinstance(tokens, str):
            reason = (
                "missing field"
                if "tokens" not in mention
                else f"wrong type: expected a string, got {_describe(tokens)}"
            )
            raise RecordError(record_id, f"{field}[{i}].tokens", reason)
        sentences.append(tokens)
        try:
            layout.append(
                json.dumps({k: (None if k == "tokens" else v) for k, v in mention.items()}, ensure_ascii=False)
            )
        except (TypeError, ValueError) as e:
            raise RecordError(record_id, f"{field}[{i}]", f"value cannot be stored as JSON ({e})") from e
    return sentences, "tokens", layout


def _mentions_back(row: Mapping[str, Any], rid: Any) -> Any:
    mentions = list(row.get("mentions") or [])
    kind = row.get("mention_format") or "strings"
    if kind == "null":
        return None
    if kind == "string":
        if len(mentions) != 1:
            raise RecordError(rid, "mentions", f"format 'string' needs one mention, the row has {len(mentions)}")
        return mentions[0]
    if kind != "tokens":
        return mentions
    layout = row.get("mention_extra") or []
    if len(layout) != len(mentions):
        raise RecordError(rid, "mention_extra", f"{len(layout)} entries for {len(mentions)} mentions")
    out: list[Any] = []
    for text, entry in zip(mentions, layout, strict=True):
        if entry == "":
            out.append(text)
            continue
        obj = json.loads(entry)
        if "tokens" in obj:
            obj["tokens"] = text
            out.append(obj)
        else:  # rows written before the layout kept the key order: tokens first
            out.append({"tokens": text, **obj})
    return out


def llava_med_records_to_pairs(
    records_or_path: Any, image_dir: str | os.PathLike | None, errors: ErrorMode = "raise"
) -> ConversionResult:
    """Convert LLaVA-Med figure-caption records (a list, or a ``.json`` / ``.jsonl`` path) to a ``pairs`` dataset.

    Returns the `LLAVA_MED_PAIR_FEATURES` dataset and the quarantine (``errors="skip"``); in ``raise`` mode the first
    bad record raises `RecordError`. `pairs_to_llava_med_records` inverts it.
    """
    return _convert(
        records_or_path,
        lambda record, index, group: llava_med_record_to_pair(record, image_dir, index=index, group=group),
        LLAVA_MED_PAIR_FEATURES,
        errors,
        id_field="pair_id",
    )


def pair_to_llava_med_record(row: Mapping[str, Any], image_dir: str | os.PathLike | None = None) -> dict:
    """The LLaVA-Med record a pairs row came from; writes its image into ``image_dir`` if given.

    Rows without the round-trip columns (pairs from another source) give a record with string mentions, no
    ``domain`` and the image file ``f"{id}.jpg"``.
    """
    rid = row.get("id")
    source = row.get("source") or {}
    image_file = row.get("image_file")
    record: dict[str, Any] = {"pair_id": rid, "pmid": source.get("pmid") or ""}
    if image_file is not None:
        record["image"] = image_file
    record["fig_label"] = row.get("fig_label") or ""
    record["fig_caption"] = row.get("caption")
    record["in_text_mention"] = _mentions_back(row, rid)
    domain = _domain_back(row.get("domain"))
    if domain is not None:
        record["domain"] = domain
    for key in row.get("absent_keys") or []:
        record.pop(key, None)
    record.update(_load_extra(row))
    record = _in_key_order(record, row.get("key_order"))
    if image_dir is not None:
        if row.get("image") is None:
            raise RecordError(rid, "image", "missing image")
        target = resolve_image_path(image_dir, image_file or f"{rid}.jpg", rid, "image")
        _write_image(row["image"], target, rid, "image", keep_bytes=bool(row.get("key_order")))
    return record


def pairs_to_llava_med_records(dataset_or_rows: Any, image_dir: str | os.PathLike | None = None) -> list[dict]:
    """Invert `llava_med_records_to_pairs`: the original records (dict equality), images written to ``image_dir``.

    From a `Dataset`, images are written with their embedded bytes, so the files equal the ones converted (decoded PIL
    images in a list of rows are re-encoded).
    """
    rows = _iter_rows(dataset_or_rows, {"image": Image(decode=False)})
    return [pair_to_llava_med_record(row, image_dir) for row in rows]


# --------------------------------------------------------------------------------------------------------------------
# B. LLaVA instruction records <-> TRL messages + images
# --------------------------------------------------------------------------------------------------------------------
def split_placeholders(value: str) -> list[dict[str, Any]]:
    """Content parts of one turn: an image part per ``<image>``, text parts for the text around it.

    One ``"\\n"`` separating the placeholder from text is removed on each side; a text part exists wherever the value
    had text (even a lone separator newline, kept as ``""``), so `join_parts` restores the value except for the
    newline it adds where the placeholder was glued to text.
    """
    pieces = value.split(IMAGE_TOKEN)
    if len(pieces) == 1:
        return [text_part(value)]
    parts: list[dict[str, Any]] = []
    last = len(pieces) - 1
    for k, piece in enumerate(pieces):
        if k > 0:
            parts.append(image_part())
        text = piece
        if k > 0 and text.startswith("\n"):
            text = text[1:]
        if k < last and text.endswith("\n") and not (k > 0 and piece == "\n"):
            text = text[:-1]
        if piece and not (0 < k < last and piece == "\n"):
            parts.append(text_part(text))
    return parts


def join_parts(content: Any, record_id: Any = None, field: str = "content") -> str:
    """The LLaVA ``value`` of one message: text parts joined, ``<image>`` for image parts, one ``"\\n"`` between an
    image part and its neighbours."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RecordError(record_id, field, f"expected a list of content parts, got {_describe(content)}")
    out: list[str] = []
    previous = None
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "image":
            piece = IMAGE_TOKEN
        elif kind == "text" and isinstance(part.get("text"), str):
            piece = part["text"]
        else:
            raise RecordError(record_id, f"{field}[{j}]", "expected a text part with a string or an image part")
        if previous is not None and "image" in (previous, kind):
            out.append("\n")
        out.append(piece)
        previous = kind
    return "".join(out)


def conversations_to_messages(
    conversations: Any,
    record_id: Any,
    n_images: int | None = None,
    *,
    field: str = "conversations",
    image_field: str = "image",
) -> list[dict[str, Any]]:
    """LLaVA ``conversations`` as TRL messages with typed parts (see the module docstring for the placeholder).

    Raises `RecordError` naming the input field, e.g. ``conversations[3].from``.

    Speakers are ``human`` / ``gpt`` (an optional leading ``system``), alternating from ``human`` to ``gpt``; gpt
    answers must not be blank; ``<image>`` may only sit in the first human turn. With ``n_images`` given, the number of
    placeholders must equal it (a placeholder without an image names ``image_field``).
    """
    if not isinstance(conversations, list):
        raise RecordError(record_id, field, f"wrong type: expected a list of turns, got {_describe(conversations)}")
    if not conversations:
        raise RecordError(record_id, field, "empty conversation")
    messages: list[dict[str, Any]] = []
    placeholders: list[int] = []
    first_human = None
    expected = "human"
    for i, turn in enumerate(conversations):
        where = f"{field}[{i}]"
        if not isinstance(turn, Mapping):
            raise RecordError(record_id, where, f"wrong type: expected a turn object, got {_describe(turn)}")
        for key in turn:
            if key not in ("from", "value"):
                raise RecordError(record_id, f"{where}.{key}", "unknown key (a turn holds only 'from' and 'value')")
        if "from" not in turn:
            raise RecordError(record_id, f"{where}.from", "missing field")
        speaker = turn["from"]
        if speaker not in SPEAKER_ROLES:
            raise RecordError(
                record_id,
                f"{where}.from",
                f"unknown speaker {speaker!r} (expected 'human' or 'gpt', or a leading 'system')",
            )
        if "value" not in turn:
            raise RecordError(record_id, f"{where}.value", "missing field")
        value = turn["value"]
        if not isinstance(value, str):
            raise RecordError(record_id, f"{where}.value", f"wrong type: expected a string, got {_describe(value)}")
        if speaker == "system":
            if i != 0:
                raise RecordError(record_id, f"{where}.from", "turns out of order: a system turn may only come first")
        elif speaker != expected:
            raise RecordError(record_id, f"{where}.from", f"turns out of order: expected a {expected!r} turn here")
        else:
            expected = "gpt" if speaker == "human" else "human"
        if IMAGE_TOKEN in value:
            if speaker != "human":
                raise RecordError(record_id, f"{where}.value", f"{IMAGE_TOKEN} placeholder in a {speaker!r} turn")
            placeholders.extend([i] * value.count(IMAGE_TOKEN))
        if speaker == "gpt" and not value.strip():
            raise RecordError(record_id, f"{where}.value", "empty gpt answer")
        if speaker == "human" and first_human is None:
            first_human = i
        messages.append({"role": SPEAKER_ROLES[speaker], "content": split_placeholders(value)})
    if first_human is None:
        raise RecordError(record_id, field, "turns out of order: no human turn")
    if expected != "human":
        raise RecordError(record_id, field, "turns out of order: the conversation must end with a gpt turn")
    if n_images is not None and len(placeholders) != n_images:
        if n_images == 0:
            reason = f"missing field: {len(placeholders)} {IMAGE_TOKEN} placeholder(s) but the record names no image"
            raise RecordError(record_id, image_field, reason)
        where = ", ".join(f"{field}[{i}]" for i in placeholders) or "no turn"
        raise RecordError(
            record_id, field, f"{len(placeholders)} {IMAGE_TOKEN} placeholder(s) (in {where}) for {n_images} image(s)"
        )
    if placeholders and placeholders[0] != first_human:
        raise RecordError(
            record_id,
            f"{field}[{placeholders[0]}].value",
            f"the {IMAGE_TOKEN} placeholder must be in the first human turn",
        )
    return messages


def messages_to_conversations(messages: Any, record_id: Any = None, *, field: str = "messages") -> list[dict]:
    """TRL messages back to LLaVA ``conversations`` (``{"from", "value"}`` turns); see `join_parts`."""
    if not isinstance(messages, list):
        raise RecordError(record_id, field, f"expected a list of messages, got {_describe(messages)}")
    conversations = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, Mapping) else None
        if role not in ROLE_SPEAKERS:
            raise RecordError(record_id, f"{field}[{i}].role", f"unknown role {role!r}")
        value = join_parts(message.get("content"), record_id, f"{field}[{i}].content")
        conversations.append({"from": ROLE_SPEAKERS[role], "value": value})
    return conversations


IMAGE_PLACEMENTS = ("first_turn", "require")
"""What to do with an image record whose conversation has no ``<image>`` placeholder (BioMed-VITAL's generator writes
such records): ``first_turn`` puts the image at the start of the first human turn -- where LLaVA's preprocessing puts
``<image>\n`` -- and remembers that it was placed, so the record comes back without a placeholder; ``require``
refuses the record."""


def llava_record_to_row(
    record: Any,
    image_dir: str | os.PathLike | None,
    *,
    index: int | None = None,
    group: str | None = None,
    image_placement: str = "first_turn",
) -> dict:
    """One LLaVA instruction record as a `LLAVA_MESSAGE_FEATURES` row; raises `RecordError`.

    Args:
        record: ``{"id", "image" (optional: text-only records have none), "conversations", "domain" (optional), ...}``.
        image_dir: the folder the ``image`` file name is resolved under (None: the working directory); names that leave
            it are refused (`resolve_image_path`).
        index: the record's position, used as its id (``"#<index>"``) in errors when it has no ``id``.
        group: the key of a ``{group: [records]}`` file the record came from (a known domain name sets the modality).
        image_placement: see `IMAGE_PLACEMENTS`.
    """
    if image_placement not in IMAGE_PLACEMENTS:
        raise ValueError(f"image_placement must be one of {IMAGE_PLACEMENTS}, got {image_placement!r}")
    rid = _record_id(record, "id", index)
    _require_mapping(record, rid)
    extra = {key: value for key, value in record.items() if key not in LLAVA_KEYS}
    if "id" not in record:
        raise RecordError(rid, "id", "missing field")
    record_id = record["id"]
    if isinstance(record_id, int) and not isinstance(record_id, bool):
        extra["id"] = record_id  # restored as an integer on the way back
        record_id = str(record_id)
    elif not isinstance(record_id, str):
        raise RecordError(rid, "id", f"wrong type: expected a string, got {_describe(record_id)}")
    elif not record_id.strip():
        raise RecordError(rid, "id", "empty string")
    if "conversations" not in record:
        raise RecordError(rid, "conversations", "missing field")
    image_file = _require_str(record, "image", rid) if "image" in record else None
    n_images = 0 if image_file is None else 1
    conversations, turn_layout = _split_turns(record["conversations"], rid)
    placeholder = None
    if n_images:
        placeholder = "inline"
        if isinstance(conversations, list) and not any(
            isinstance(t, Mapping) and isinstance(t.get("value"), str) and IMAGE_TOKEN in t["value"]
            for t in conversations
        ):
            if image_placement == "require":
                raise RecordError(
                    rid,
                    "conversations",
                    f"no {IMAGE_TOKEN} placeholder for the record's image (image_placement: require)",
                )
            placeholder = "inserted"
    messages = conversations_to_messages(conversations, rid, n_images if placeholder != "inserted" else 0)
    if placeholder == "inserted":
        first_user = next(m for m in messages if m["role"] == "user")
        first_user["content"].insert(0, image_part())
    domain = _parse_domain(record, rid, extra)
    images = [load_image_file(image_dir, image_file, rid, "image")] if image_file is not None else []
    validate_messages(messages, rid, "messages", n_images=len(images))  # the contract, as every stage checks it
    return {
        "id": record_id,
        "images": images,
        "messages": messages,
        "modality": domain_key_modality(group) or modality_from_domain(domain),
        "image_file": image_file,
        "domain": domain,
        "extra": _dump_extra(extra, rid),
        "key_order": list(record),
        "turn_layout": turn_layout,
        "image_placeholder": placeholder,
    }


def _split_turns(conversations: Any, rid: Any) -> tuple[Any, list[str]]:
    """The turns reduced to ``from`` / ``value`` (for the converter's checks) and each turn's layout: ``""`` for a plain
    ``{"from", "value"}`` turn, else the turn as JSON with ``from`` / ``value`` as null (its key order and extra keys,
    restored on the way back)."""
    if not isinstance(conversations, list):
        return conversations, []
    plain, layout = [], []
    for i, turn in enumerate(conversations):
        if not isinstance(turn, Mapping):
            plain.append(turn)
            layout.append("")
            continue
        plain.append({k: turn[k] for k in ("from", "value") if k in turn})
        if list(turn) == ["from", "value"]:
            layout.append("")
            continue
        try:
            layout.append(
                json.dumps({k: (None if k in ("from", "value") else v) for k, v in turn.items()}, ensure_ascii=False)
            )
        except (TypeError, ValueError) as e:
            raise RecordError(rid, f"conversations[{i}]", f"value cannot be stored as JSON ({e})") from e
    return plain, layout


def llava_to_messages(
    records_or_path: Any,
    image_dir: str | os.PathLike | None,
    errors: ErrorMode = "raise",
    image_placement: str = "first_turn",
) -> ConversionResult:
    """Convert LLaVA / BioMed-VITAL instruction records (a list, or a ``.json`` / ``.jsonl`` path) to TRL rows.

    Returns the `LLAVA_MESSAGE_FEATURES` dataset (``id``, ``images``, ``messages``, ``modality`` + round-trip columns)
    and the quarantine (``errors="skip"``); in ``raise`` mode the first bad record raises `RecordError`.
    `messages_to_llava` inverts it (see the module docstring for the placeholder-newline normalisation).
    """
    if image_placement not in IMAGE_PLACEMENTS:
        raise ValueError(f"image_placement must be one of {IMAGE_PLACEMENTS}, got {image_placement!r}")
    return _convert(
        records_or_path,
        lambda record, index, group: llava_record_to_row(
            record, image_dir, index=index, group=group, image_placement=image_placement
        ),
        LLAVA_MESSAGE_FEATURES,
        errors,
    )


def row_to_llava(row: Mapping[str, Any], image_dir: str | os.PathLike | None = None) -> dict:
    """The LLaVA record of one conversational row; writes its image into ``image_dir`` if given.

    Works for any row with ``id``, ``images`` (at most one) and ``messages`` (e.g. a ``selected`` row): without an
    ``image_file`` the image is named ``f"{id}.png"``; without ``domain`` / ``extra`` those keys are left out.
    """
    rid = row.get("id")
    images = list(row.get("images") or [])
    if len(images) > 1:
        raise RecordError(rid, "images", f"a LLaVA record holds one image, the row has {len(images)}")
    messages = row.get("messages")
    found = count_image_parts(messages) if isinstance(messages, list) else 0
    if found != len(images):
        raise RecordError(rid, "messages", f"{found} image part(s) for {len(images)} image(s)")
    image_file = row.get("image_file")
    record: dict[str, Any] = {"id": rid}
    if images:
        record["image"] = image_file or f"{rid}.png"
        if image_dir is not None:
            target = resolve_image_path(image_dir, record["image"], rid, "images[0]")
            _write_image(images[0], target, rid, "images[0]", keep_bytes=image_file is not None)
    elif image_file is not None:
        raise RecordError(rid, "image_file", "set, but the row holds no image")
    if row.get("image_placeholder") == "inserted":  # the source had no <image>: take back the placed image part
        messages = copy.deepcopy(messages)
        first_user = next(m for m in messages if m["role"] == "user")
        if not first_user["content"] or first_user["content"][0].get("type") != "image":
            raise RecordError(rid, "messages", "image_placeholder 'inserted' but the first user turn starts with text")
        del first_user["content"][0]
    conversations = messages_to_conversations(messages, rid)
    layout = row.get("turn_layout") or []
    if layout:
        if len(layout) != len(conversations):
            raise RecordError(rid, "turn_layout", f"{len(layout)} entries for {len(conversations)} turns")
        for i, entry in enumerate(layout):
            if entry:
                turn = json.loads(entry)
                turn.update((k, conversations[i][k]) for k in ("from", "value") if k in turn)
                conversations[i] = turn
    record["conversations"] = conversations
    domain = _domain_back(row.get("domain"))
    if domain is not None:
        record["domain"] = domain
    record.update(_load_extra(row))
    return _in_key_order(record, row.get("key_order"))


def messages_to_llava(dataset_or_rows: Any, image_dir: str | os.PathLike | None = None) -> list[dict]:
    """Invert `llava_to_messages`: the original records (dict equality, key sets included), images to ``image_dir``.

    Accepts a `Dataset` or a list of rows. From a `Dataset`, images are written with their embedded bytes (file name
    ``image_file``, else ``f"{id}.png"``, re-encoded when the bytes are in another format than the name says); rows
    holding decoded PIL images (``list(dataset)``) can only be re-encoded, so pass the dataset for identical files.
    """
    rows = _iter_rows(dataset_or_rows, {"images": List(Image(decode=False))})
    return [row_to_llava(row, image_dir) for row in rows]


# --------------------------------------------------------------------------------------------------------------------
# Files: the way back to the source layout
# --------------------------------------------------------------------------------------------------------------------
def group_records(records: list[dict], groups: list[str | None]) -> list[dict] | dict[str, list[dict]]:
    """The source layout of converted records: a list, or ``{group: [records]}`` (groups in order of first
    appearance, each group's records in order) when every record came from a group."""
    if not groups or any(g is None for g in groups):
        return records
    out: dict[str, list[dict]] = {}
    for record, group in zip(records, groups, strict=True):
        out.setdefault(group, []).append(record)
    return out


def write_records(
    records: Any, path: str | os.PathLike, *, indent: int | None = None, ensure_ascii: bool = True
) -> None:
    """Write records as ``.jsonl`` (one per line) or ``.json`` (a list or a ``{group: [records]}`` object) with
    `json.dump`'s formatting options, so a file written with the same options comes out byte for byte."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as f:
        if path.suffix == ".jsonl":
            for record in records:
                f.write(json.dumps(record, ensure_ascii=ensure_ascii) + "\n")
        else:
            json.dump(records, f, indent=indent, ensure_ascii=ensure_ascii)


def export_llava_med(
    dataset: Dataset, path: str | os.PathLike, image_dir: str | os.PathLike | None = None, **json_options: Any
) -> Any:
    """Write a pairs dataset made by `llava_med_records_to_pairs` back to a LLaVA-Med file (its original layout: a
    list, or ``{domain: [records]}``) and its images to ``image_dir``; returns what was written."""
    records = pairs_to_llava_med_records(dataset, image_dir)
    groups = dataset["domain_key"] if "domain_key" in dataset.column_names else []
    layout = group_records(records, groups)
    write_records(layout, path, **json_options)
    return layout


def export_llava(
    dataset: Dataset, path: str | os.PathLike, image_dir: str | os.PathLike | None = None, **json_options: Any
) -> list[dict]:
    """Write a dataset made by `llava_to_messages` back to a LLaVA JSON / JSON-lines file (and its images to
    ``image_dir``); returns the records written."""
    records = messages_to_llava(dataset, image_dir)
    write_records(records, path, **json_options)
    return records


__all__ = [
    "DOMAIN",
    "DOMAIN_FLAGS",
    "IMAGE_TOKEN",
    "LLAVA_MED_PAIR_FEATURES",
    "LLAVA_MESSAGE_FEATURES",
    "ConversionResult",
    "IMAGE_PLACEMENTS",
    "SourceRecord",
    "conversations_to_messages",
    "domain_key_modality",
    "export_llava",
    "export_llava_med",
    "group_records",
    "iter_json_array",
    "resolve_image_path",
    "write_records",
    "join_parts",
    "llava_med_record_to_pair",
    "llava_med_records_to_pairs",
    "llava_record_to_row",
    "llava_to_messages",
    "load_image_file",
    "messages_to_conversations",
    "messages_to_llava",
    "modality_from_domain",
    "pair_to_llava_med_record",
    "pairs_to_llava_med_records",
    "row_to_llava",
    "split_placeholders",
]
