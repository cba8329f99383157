"""An append-only JSONL journal of finished LLM requests, so that a killed run resumes with nothing lost or redone.

Each line is one finished request: its key, every :class:`CompletionResult` field and a UTC timestamp. An append is
written to the operating system before it returns, so a killed process loses nothing it appended; ``fsync`` (what a
power cut needs) is a group commit in a background thread, one ``fsync`` for every batch of appends that arrived
while the previous one ran or in the ``commit_interval_s`` (50 ms) since, so the event loop never waits for the disk
and the disk is flushed at most 20 times a second (``group_commit=False`` syncs inline instead, every
``fsync_every``-th append). A line torn by a crash is ignored on the next load (with a warning) and cut off
before anything new is appended. Loading is one pass into a dict; "is this key done?" is a dict lookup.

Requests in flight when a process dies are paid for but never journaled. The client marks each request in a small
side file (``<journal>.sent``) as it sends it; on the next open, a key marked there but missing from the journal was
in flight at the kill, and its resend is journaled with ``resent_after_kill`` set, so runs and cards can say how many
requests (at most the concurrency per kill) were paid for twice.

When one key has several lines (a failed request retried on a later run), a success wins over a failure, and
otherwise the last line wins. Work is split across processes by sharding the inputs, one journal per shard::

    index, count = parse_shard("1/4")
    mine = shard_items(items, index, count)
    journal = Journal.open(shard_path("runs/captions.jsonl", index, count))  # runs/captions-00001-of-00004.jsonl
    ...
    results = merge_journals(sorted(Path("runs").glob("captions-*-of-00004.jsonl")))

Public API: :class:`CompletionResult`, :class:`Journal`, :func:`merge_journals`, :func:`shard_path`,
:func:`shard_items`, :func:`parse_shard`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar


try:
    import fcntl
except ImportError:  # Windows: no advisory lock
    fcntl = None

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(slots=True)
class CompletionResult:
    """The outcome of one chat request, successful or not.

    Attributes:
        key: the request's stable key (see :func:`vital.llm.request_key`).
        text: the reply's content ("" on failure).
        finish_reason: ``stop``, ``length``, ``content_filter``, ... as the server reported it.
        prompt_tokens, completion_tokens: the usage the server reported.
        cost_usd: what the request cost by the endpoint's price table.
        latency_s: seconds of the last attempt's HTTP exchange.
        elapsed_s: seconds from the first attempt to the result, including queueing for limits and backoff.
        attempts: HTTP attempts made (1 when the first succeeded; 0 when none could be made).
        model: the model the server says answered (``vital-stand-in`` for the stand-in server).
        error: ``None`` on success, else a short reason (``"http 500 after 5 attempts"``, ``"timeout"``, ...).
        refusal: the refusal message, when the server reports one in ``message.refusal``.
        system_fingerprint: the server's ``system_fingerprint``, if any.
        resent_after_kill: the request was in flight when an earlier run was killed, and was sent again (the lost
            attempt was most likely billed too).
        mode: how it was sent: ``online`` (a chat request) or ``batch`` (the provider's Batch API, at its prices);
            ``None`` for a journal line written before this was recorded, or a result that is not an API request.
    """

    key: str
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    elapsed_s: float = 0.0
    attempts: int = 0
    model: str | None = None
    error: str | None = None
    refusal: str | None = None
    system_fingerprint: str | None = None
    resent_after_kill: bool = False
    mode: str | None = None

    @property
    def ok(self) -> bool:
        """True when the request succeeded (a refusal is a successful request)."""
        return self.error is None

    def to_record(self) -> dict[str, Any]:
        """The journal line for this result: its fields plus a UTC timestamp ``ts``."""
        record = {name: getattr(self, name) for name in _RESULT_FIELDS}  # flat fields: no deep copy needed
        record["ts"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")  # noqa: UP017 - Python 3.10
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> CompletionResult:
        """Rebuild a result from a journal line, ignoring fields it does not know (such as ``ts``)."""
        return cls(**{name: record[name] for name in _RESULT_FIELDS if name in record})


_RESULT_FIELDS = tuple(field.name for field in dataclasses.fields(CompletionResult))


def _prefer(old: CompletionResult | None, new: CompletionResult) -> CompletionResult:
    """Which of two results for one key to keep: a success over a failure, else the newer."""
    if old is not None and old.ok and not new.ok:
        return old
    return new


# With group commit, the least time between two fsyncs of a journal (see Journal's ``commit_interval_s``).
COMMIT_INTERVAL_S = 0.05
LOADS = 0  # journal files read by this process (a restart should read each once)


def _load(path: Path) -> tuple[dict[str, CompletionResult], int]:
    """One pass over a journal: (results by key, bad lines skipped)."""
    global LOADS
    LOADS += 1
    results: dict[str, CompletionResult] = {}
    bad = 0
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            torn = not line.endswith(b"\n")
            try:
                if torn:
                    raise ValueError("no newline")
                record = json.loads(line)
                result = CompletionResult.from_record(record)
            except (ValueError, TypeError, KeyError) as exc:
                if line.strip():
                    bad += 1
                    where = "a torn last line (from a crash?)" if torn else f"a corrupt line {number}"
                    logger.warning("journal %s: ignoring %s: %s", path, where, exc)
                continue
            results[result.key] = _prefer(results.get(result.key), result)
    return results, bad


class Journal:
    """An append-only JSONL journal of finished requests (see the module docstring).

    Appends from many tasks or threads of one process are safe (they are serialised by a lock). One journal file
    belongs to one open ``Journal`` at a time (an advisory file lock makes a second one fail): shard the work and give
    each process its own (:func:`shard_path`); read a live journal with :func:`merge_journals`.

    Args:
        path: the JSONL file; created (with its folder) if missing.
        fsync_every: without group commit, fsync after every N-th append (1: every append).
        group_commit: fsync in a background thread, once per batch of appends (lines still reach the OS on every
            append, so a killed process loses none).
        commit_interval_s: with group commit, the least time between two fsyncs: the appends of the interval wait
            for one fsync together. A killed process still loses nothing (each line reached the OS when its append
            returned); only a power cut may lose up to this much, which a rerun sends again.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fsync_every: int = 1,
        group_commit: bool = True,
        commit_interval_s: float = COMMIT_INTERVAL_S,
    ) -> None:
        if fsync_every < 1:
            raise ValueError(f"fsync_every must be >= 1, got {fsync_every}")
        if commit_interval_s < 0:
            raise ValueError(f"commit_interval_s must be >= 0, got {commit_interval_s}")
        self.path = Path(path)
        self.fsync_every = fsync_every
        self.group_commit = group_commit
        self.commit_interval_s = commit_interval_s
        self.skipped_lines = 0
        self.fsyncs = 0  # fsync calls made (group commit: one per batch)
        self._lock = threading.Lock()
        self._unsynced = 0
        self._sync_wanted = threading.Condition(self._lock)
        self._syncer: threading.Thread | None = None
        self._syncing = False
        self._syncer_idle = False  # the group commit thread waits for an append (only then does append wake it)
        self._sent_fd: int | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held until close()
        self._lock_file()
        self._results, self.skipped_lines = _load(self.path)
        if not self._ends_with_newline():
            # A torn tail would glue itself to the next append: cut it off (appends go to the new end).
            size, end = self.path.stat().st_size, self._last_newline_end()
            logger.warning("journal %s: cutting off a torn last line of %d bytes", self.path, size - end)
            with open(self.path, "r+b") as handle:
                handle.truncate(end)
        self.interrupted = self._interrupted_sends()

    # -- requests sent but never journaled (in flight at a kill) -------------------------------------------------------
    @property
    def sent_path(self) -> Path:
        """The side file of sent keys: ``<journal>.sent``."""
        return self.path.with_name(self.path.name + ".sent")

    def _interrupted_sends(self) -> frozenset[str]:
        """Keys sent by an earlier run that never got a journal line; the side file is compacted to them."""
        try:
            sent = self.sent_path.read_bytes().decode("utf-8", "replace").split("\n")
        except FileNotFoundError:
            return frozenset()
        interrupted = frozenset(key for key in sent if key and key not in self._results)
        tmp = self.sent_path.with_name(self.sent_path.name + ".tmp")
        tmp.write_text("".join(f"{key}\n" for key in sorted(interrupted)), encoding="utf-8")
        os.replace(tmp, self.sent_path)
        if interrupted:
            logger.warning(
                "journal %s: %d request(s) were in flight when the last run stopped; they will be sent again",
                self.path,
                len(interrupted),
            )
        return interrupted

    def mark_sent(self, key: str) -> None:
        """Note that ``key`` is being sent (one unbuffered append to the side file: it survives a kill)."""
        if self._sent_fd is None:
            self._sent_fd = os.open(self.sent_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(self._sent_fd, f"{key}\n".encode())

    def _lock_file(self) -> None:
        """Take an exclusive advisory lock, so that two processes never append to one journal (POSIX only)."""
        if fcntl is None:
            return
        try:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._handle.close()
            raise RuntimeError(
                f"journal {self.path} is open in another process (or another Journal): give each process its own "
                "shard (shard_path), or read it with merge_journals"
            ) from None

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        fsync_every: int = 1,
        group_commit: bool = True,
        commit_interval_s: float = COMMIT_INTERVAL_S,
    ) -> Journal:
        """Open (and load) the journal at ``path``, creating it if needed."""
        return cls(path, fsync_every=fsync_every, group_commit=group_commit, commit_interval_s=commit_interval_s)

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                return True
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"

    def _last_newline_end(self) -> int:
        """The offset just past the file's last newline (0 if it has none)."""
        with open(self.path, "rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            block = 1 << 16
            while end > 0:
                start = max(0, end - block)
                handle.seek(start)
                chunk = handle.read(end - start)
                index = chunk.rfind(b"\n")
                if index >= 0:
                    return start + index + 1
                end = start
        return 0

    def done(self, key: str) -> CompletionResult | None:
        """The journaled result for ``key`` (success or failure), or ``None`` if it never finished."""
        return self._results.get(key)

    def append(self, result: CompletionResult) -> None:
        """Write one finished request to the OS before returning (a killed process loses none); fsync'ed by the
        group commit thread, or inline per ``fsync_every`` without group commit."""
        if result.key in self.interrupted and not result.resent_after_kill:
            result = dataclasses.replace(result, resent_after_kill=True)
        line = json.dumps(result.to_record(), ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            if self._handle.closed:
                raise ValueError(f"journal {self.path} is closed")
            self._handle.write(line)
            self._handle.flush()
            self._unsynced += 1
            self._results[result.key] = _prefer(self._results.get(result.key), result)
            if self.group_commit:
                if self._syncer is None:
                    self._syncer = threading.Thread(target=self._sync_loop, name=f"journal-sync {self.path.name}")
                    self._syncer.daemon = True
                    self._syncer.start()
                elif self._syncer_idle:
                    # Wake it only from its idle wait: a wake-up per append costs the event loop more than the
                    # append itself (the thread takes the GIL back each time).
                    self._syncer_idle = False
                    self._sync_wanted.notify()
            elif self._unsynced >= self.fsync_every:
                self._fsync_locked()

    def _fsync_locked(self) -> None:
        os.fsync(self._handle.fileno())
        self._unsynced = 0
        self.fsyncs += 1

    def _sync_loop(self) -> None:
        """The group commit: wait for appends, then one fsync for all that arrived (outside the lock, so appends go
        on meanwhile); stops when the journal closes."""
        with self._lock:
            while True:
                while not self._unsynced and not self._handle.closed:
                    self._syncer_idle = True
                    self._sync_wanted.wait()
                self._syncer_idle = False
                if self._handle.closed:
                    return
                batch, fd = self._unsynced, self._handle.fileno()
                self._unsynced, self._syncing = 0, True
                self._lock.release()
                try:
                    os.fsync(fd)
                finally:
                    self._lock.acquire()
                    self._syncing = False
                    self._sync_wanted.notify_all()
                self.fsyncs += 1
                logger.debug("journal %s: one fsync for %d appends", self.path, batch)
                # Let the next batch gather (appends do not wake this wait; close does).
                deadline = time.monotonic() + self.commit_interval_s
                while not self._handle.closed and (left := deadline - time.monotonic()) > 0:
                    self._sync_wanted.wait(left)

    def sync(self) -> None:
        """fsync whatever was appended since the last sync (now, in the calling thread)."""
        with self._lock:
            if not self._handle.closed and self._unsynced:
                self._handle.flush()
                self._fsync_locked()

    def close(self) -> None:
        """Sync and close the file; the loaded results stay readable."""
        with self._lock:
            while self._syncing:  # let the group commit finish with the file before it closes
                self._sync_wanted.wait()
            if not self._handle.closed:
                self._handle.flush()
                os.fsync(self._handle.fileno())
                self._unsynced = 0
                self.fsyncs += 1
                self._handle.close()
            self._sync_wanted.notify_all()
        if self._syncer is not None:
            self._syncer.join()
            self._syncer = None
        if self._sent_fd is not None:
            os.close(self._sent_fd)
            self._sent_fd = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._results)

    def __contains__(self, key: object) -> bool:
        return key in self._results

    def keys(self) -> Iterator[str]:
        """The keys of every finished request."""
        return iter(list(self._results))

    def results(self) -> dict[str, CompletionResult]:
        """A copy of every journaled result, by key."""
        return dict(self._results)

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r}, records={len(self)})"


def merge_journals(paths: Iterable[str | os.PathLike]) -> dict[str, CompletionResult]:
    """Load several journals (shards) into one dict by key, one pass each; on a shared key a success wins."""
    merged: dict[str, CompletionResult] = {}
    for path in paths:
        results, _ = _load(Path(path))
        for key, result in results.items():
            merged[key] = _prefer(merged.get(key), result)
    return merged


def parse_shard(spec: str) -> tuple[int, int]:
    """``"1/4"`` -> ``(1, 4)``: shard index (from 0) and shard count, validated ``0 <= index < count``."""
    try:
        index_text, count_text = spec.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise ValueError(f"a shard is 'index/count' such as '0/4', got {spec!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {spec!r}: need 0 <= index < count and count >= 1")
    return index, count


def shard_items(items: Sequence[T], index: int, count: int, contiguous: bool = True) -> list[T]:
    """The ``index``-th of ``count`` deterministic shards of ``items``.

    Contiguous shards are consecutive blocks whose sizes differ by at most one (like ``datasets.Dataset.shard``);
    strided shards take every ``count``-th item from ``index``. Either way the shards partition ``items``.
    """
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"need 0 <= index < count and count >= 1, got index={index}, count={count}")
    if not contiguous:
        return list(items[index::count])
    size, extra = divmod(len(items), count)
    start = index * size + min(index, extra)
    return list(items[start : start + size + (1 if index < extra else 0)])


def shard_path(base: str | os.PathLike, index: int, count: int) -> Path:
    """The journal of one shard: ``runs/x.jsonl`` -> ``runs/x-00001-of-00004.jsonl``; ``base`` itself when count is 1."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"need 0 <= index < count and count >= 1, got index={index}, count={count}")
    base = Path(base)
    if count == 1:
        return base
    suffix = base.suffix or ".jsonl"
    return base.with_name(f"{base.stem if base.suffix else base.name}-{index:05d}-of-{count:05d}{suffix}")
