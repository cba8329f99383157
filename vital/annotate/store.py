"""Where clinicians' annotations live: one append-only JSONL file per task, dataset and annotator.

Layout::

    <store>/<task>/<dataset repo, "/" as "__">/<annotator>.jsonl

Every click that annotates an item appends one line (an `Annotation`) and returns only after the line is written,
flushed and fsync'ed, so closing the browser, killing the server or losing power loses nothing that the clinician saw
as saved. Nothing is ever rewritten: changing one's mind appends a new line, and the last line for an item wins.

Why JSONL and not sqlite (WAL): the files are the audit trail, readable with ``cat`` and ``jq``, diffable, easy to back
up or push to a dataset repo, and hashable for the exported dataset's lineage (`store_sha256`); the generation stage's
request journal (`vital.llm.journal`) uses the same design. One file per annotator means annotators never contend for a
lock; appends to one file (one annotator in two tabs, or two server processes) are serialised by a thread lock and an
advisory ``flock`` around each ``O_APPEND`` write. A line torn by a crash mid-write is skipped (with a warning) on read
and cut off before the next append. Readers pick up other processes' appends incrementally (from the last offset read),
so "where was I?" is O(new lines), not a rescan.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


try:
    import fcntl
except ImportError:  # Windows: the thread lock still serialises one process's appends
    fcntl = None

logger = logging.getLogger(__name__)

TASKS = ("demos", "preference", "rating")
ANNOTATOR_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RECORD_VERSION = 2  # 2: ``guidelines`` (the version on screen) and ``role`` (annotator or adjudicator)
ROLES = ("annotator", "adjudicator")

# Size limits of every field a browser can fill (characters). The app also refuses request bodies over
# `vital.annotate.auth.MAX_REQUEST_BYTES` before they reach a handler; these limits hold for any other caller too.
MAX_COMMENT_CHARS = 2_000
MAX_TURN_CHARS = 4_000  # one question or one answer of an edited conversation
MAX_TURNS = 8
MAX_ITEM_ID_CHARS = 256


class AnonymousWriteError(PermissionError):
    """An annotation without a logged-in annotator: refused, never written."""


class FieldTooLongError(ValueError):
    """A field over its size limit: refused, never written."""


def check_length(name: str, value: str | None, limit: int) -> str:
    """``value`` (None as ""), or `FieldTooLongError` naming the field when it is over ``limit`` characters."""
    value = value or ""
    if len(value) > limit:
        raise FieldTooLongError(f"the {name} is {len(value):,} characters long; the limit is {limit:,}")
    return value


def utc_now() -> str:
    """The current UTC time as ISO 8601 with milliseconds and a ``Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")  # noqa: UP017


def check_annotator(annotator: str | None) -> str:
    """The annotator name, or `AnonymousWriteError` when there is none; `ValueError` when it cannot name a file."""
    if annotator is None or not str(annotator).strip():
        raise AnonymousWriteError("annotations need a logged-in annotator; anonymous writes are refused")
    annotator = str(annotator).strip()
    if not ANNOTATOR_RE.match(annotator):
        raise ValueError(f"annotator name {annotator!r} must match {ANNOTATOR_RE.pattern}")
    return annotator


@dataclass
class Annotation:
    """One saved click.

    Attributes:
        task: ``demos``, ``preference`` or ``rating``.
        dataset: the repo id of the items; ``commit`` the commit they were read from.
        item_id: the annotated item (answer-pair id, review pair / demo id, or ``<candidate id>#t<turn>``).
        annotator: who clicked (the logged-in user).
        choice: what was clicked: ``A`` / ``B`` / ``tie`` (preference), ``accept`` / ``reject`` / ``edit`` (demos),
            ``score`` (rating).
        label: the choice in the dataset's terms: ``answer_a`` / ``answer_b`` / ``tie`` (the side that ``A`` or ``B``
            showed), the demo decision, or the score as text.
        shown: what was on screen and where, e.g. ``{"A": "answer_b", "B": "answer_a"}`` or the candidate shown.
        score: the rating (0-10), else None.
        messages: the conversation accepted or edited (demos), else None.
        comment: the annotator's optional comment.
        time: UTC time of the click; ``id`` a unique id of the record; ``session`` the browser session.
        guidelines: the version of the guidelines on screen (`vital.annotate.guidelines.Guidelines.version`).
        role: ``annotator``, or ``adjudicator`` for a campaign lead's decision on an item annotators disagreed on
            (kept in the ``adjudication/`` folder next to the annotators' files).
    """

    task: str
    dataset: str
    commit: str
    item_id: str
    annotator: str
    choice: str
    label: str
    shown: dict[str, Any] = field(default_factory=dict)
    score: float | None = None
    messages: list[dict[str, Any]] | None = None
    comment: str = ""
    time: str = field(default_factory=utc_now)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    session: str = ""
    guidelines: str = ""
    role: str = "annotator"
    v: int = RECORD_VERSION

    def check(self) -> None:
        """Refuse a record whose fields are over their size limits (`FieldTooLongError`) or whose role is unknown."""
        check_length("comment", self.comment, MAX_COMMENT_CHARS)
        check_length("item id", self.item_id, MAX_ITEM_ID_CHARS)
        for name in ("choice", "label", "guidelines", "session", "commit", "dataset"):
            check_length(name, getattr(self, name), MAX_ITEM_ID_CHARS)
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r} (expected one of {ROLES})")
        if self.messages:
            if len(self.messages) > 2 * MAX_TURNS + 1:
                raise FieldTooLongError(
                    f"the conversation has {len(self.messages) // 2} turns; the limit is {MAX_TURNS}"
                )
            for message in self.messages:
                for part in message.get("content") or []:
                    check_length("conversation text", part.get("text"), MAX_TURN_CHARS)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Annotation:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in record.items() if k in known})


def _slug(repo_id: str) -> str:
    return repo_id.replace("/", "__")


class _Log:
    """One annotator's file: appends under locks, incremental reads, the latest annotation per item."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        self.offset = 0  # bytes of the file already parsed (always just after a newline)
        self.records: list[Annotation] = []
        self.latest: dict[str, Annotation] = {}
        self.skipped = 0

    def refresh(self) -> None:
        """Parse whatever was appended since the last read (by this process or another)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size == self.offset:
            return
        if size < self.offset:  # the file was replaced or cut: read it again from the start
            self.offset, self.records, self.latest = 0, [], {}
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read(size - self.offset)
        end = data.rfind(b"\n") + 1  # a tail without a newline is torn or still being written: not yet
        for number, line in enumerate(data[:end].splitlines()):
            if not line.strip():
                continue
            try:
                record = Annotation.from_dict(json.loads(line))
            except (ValueError, TypeError) as error:
                self.skipped += 1
                logger.warning("%s: skipping a corrupt line (%d bytes in): %s", self.path, self.offset + number, error)
                continue
            self.records.append(record)
            self.latest[record.item_id] = record
        self.offset += end

    def append(self, record: Annotation) -> None:
        line = (record.to_json() + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                _cut_torn_tail(fd)
                view = memoryview(line)
                while view:  # one write() normally; loop in case the kernel takes fewer bytes
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)  # closing releases the flock
            self.refresh()


def _cut_torn_tail(fd: int) -> None:
    """If the file does not end with a newline (a crash tore the last line), cut it back to its last newline."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    end, block = size, 1 << 16
    while end > 0:
        start = max(0, end - block)
        index = os.pread(fd, end - start, start).rfind(b"\n")
        if index >= 0:
            end = start + index + 1
            break
        end = start
    logger.warning("cutting off a torn last line of %d bytes", size - end)
    os.ftruncate(fd, end)


class AnnotationStore:
    """The annotations of every task, dataset and annotator under one folder (see the module docstring).

    Example::

        store = AnnotationStore("outputs/annotations")
        store.append(Annotation("preference", "quickstart/answer-pairs", commit, "q-0", "alice", "A", "answer_b"))
        store.latest("preference", "quickstart/answer-pairs", "alice")  # {"q-0": Annotation(...)}
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(os.path.expanduser(str(root))).resolve()
        self._logs: dict[Path, _Log] = {}
        self._guard = threading.Lock()

    def __repr__(self) -> str:
        return f"AnnotationStore({str(self.root)!r})"

    def path(self, task: str, dataset: str, annotator: str, role: str = "annotator") -> Path:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r} (expected one of {TASKS})")
        folder = self.root / task / _slug(dataset)
        if role == "adjudicator":
            folder = folder / "adjudication"
        return folder / f"{check_annotator(annotator)}.jsonl"

    def _log(self, task: str, dataset: str, annotator: str, role: str = "annotator") -> _Log:
        path = self.path(task, dataset, annotator, role)
        with self._guard:
            if path not in self._logs:
                self._logs[path] = _Log(path)
            return self._logs[path]

    def append(self, annotation: Annotation) -> Annotation:
        """Write one annotation durably (fsync'ed) before returning it. Refuses an annotation without an annotator."""
        annotation.annotator = check_annotator(annotation.annotator)
        if not annotation.item_id:
            raise ValueError("an annotation needs an item id")
        annotation.check()
        self._log(annotation.task, annotation.dataset, annotation.annotator, annotation.role).append(annotation)
        return annotation

    def adjudications(self, task: str, dataset: str) -> dict[str, Annotation]:
        """The latest adjudication of each item (whichever campaign lead decided last)."""
        folder = self.root / task / _slug(dataset) / "adjudication"
        out: dict[str, Annotation] = {}
        for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
            log = self._log(task, dataset, path.stem, "adjudicator")
            with log.lock:
                log.refresh()
                for item_id, record in log.latest.items():
                    if item_id not in out or record.time > out[item_id].time:
                        out[item_id] = record
        return out

    def latest(self, task: str, dataset: str, annotator: str) -> dict[str, Annotation]:
        """The last annotation of each item by ``annotator`` (a copy)."""
        log = self._log(task, dataset, annotator)
        with log.lock:
            log.refresh()
            return dict(log.latest)

    def history(self, task: str, dataset: str, annotator: str) -> list[Annotation]:
        """Every annotation ``annotator`` saved, in order (superseded ones included)."""
        log = self._log(task, dataset, annotator)
        with log.lock:
            log.refresh()
            return list(log.records)

    def annotators(self, task: str, dataset: str) -> list[str]:
        """Everyone with a file for this task and dataset, sorted."""
        folder = self.root / task / _slug(dataset)
        return sorted(p.stem for p in folder.glob("*.jsonl")) if folder.is_dir() else []

    def files(self, task: str, dataset: str, adjudication: bool = False) -> list[Path]:
        """The annotators' files (or, with ``adjudication``, the campaign leads' decision files)."""
        folder = self.root / task / _slug(dataset)
        if adjudication:
            folder = folder / "adjudication"
        return sorted(folder.glob("*.jsonl")) if folder.is_dir() else []

    def all_latest(self, task: str, dataset: str) -> dict[str, dict[str, Annotation]]:
        """``{annotator: {item_id: last annotation}}`` for a task and dataset."""
        return {a: self.latest(task, dataset, a) for a in self.annotators(task, dataset)}


def store_sha256(files: Iterable[str | os.PathLike], root: str | os.PathLike | None = None) -> str:
    """One hash over the files' relative names and complete lines: what an export records as its lineage.

    A torn, unfinished last line is left out, so the hash names exactly the annotations an export read.
    """
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in files):
        name = path.relative_to(root).as_posix() if root is not None else path.name
        data = path.read_bytes()
        data = data[: data.rfind(b"\n") + 1]
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def iter_records(path: str | os.PathLike) -> Iterator[Annotation]:
    """The complete lines of one annotator file as annotations (for inspection and tests)."""
    log = _Log(Path(path))
    log.refresh()
    yield from log.records
