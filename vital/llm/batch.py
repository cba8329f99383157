"""Batch mode: send a stage's requests through the provider's Batch API (OpenAI or Azure OpenAI) at half the price.

Online mode (the default) sends one HTTP request per job and has the answer in seconds. Batch mode writes the jobs
that no journal holds yet as JSONL files within the provider's limits (requests and bytes per file), uploads them
(``files``, purpose ``batch``), creates one batch per file (``batches``, completion window 24 h), polls with backoff,
downloads the output and error files, and appends every finished request to the same journal, under the same key, as
online mode would: a run can mix both (finish a batch's failures online, or a killed online run in batch mode).

Failed, expired and cancelled batches, and per-request errors, are journaled as failed results and submitted again in
a new batch (up to ``EndpointConfig.max_retries`` times per request and run, retryable errors only, as online); what
still fails is returned as a failure and quarantined by the stage like an online failure.

Resume: every step is written to an intent log (``<journal_dir>/batches/<journal>/batches.jsonl``, one fsync'ed line
per event) *before* the remote call that it announces, and its outcome right after. A rerun replays the log: files
written but not uploaded are uploaded; an upload or a batch creation that was announced but whose outcome was not
recorded (the process died while the call was answered) is looked up on the server (files by their unique name,
batches by their metadata) before anything is sent again; batches created are polled and merged. So a request is
submitted once, wherever the run was killed. Requests whose result was merged into the journal are never sent again.

Use it through `vital.llm.jobs.run_jobs_sharded` (``batch=BatchConfig(mode="batch")``), or directly::

    with Journal.open("runs/journal.jsonl") as journal:
        results = BatchRunner(endpoint, BatchConfig(mode="batch"), journal).run(jobs, build_messages)

Public API: :class:`BatchConfig`, :class:`BatchRunner` and :func:`run_batch_jobs`.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

from vital.llm.client import EndpointConfig, failure_category, message_text
from vital.llm.journal import CompletionResult, Journal
from vital.llm.pricing import cost_usd


logger = logging.getLogger(__name__)

_TERMINAL = ("completed", "failed", "expired", "cancelled")
_RETRYABLE_STATUS = {408, 409, 429}
_PLACEHOLDER_KEY = "EMPTY"


@dataclass
class BatchConfig:
    """
    How a stage sends its requests: online (default) or through the provider's Batch API. Every field is a
    command-line flag of the API stages (`generate`, `rate`, `evaluate`).

    Parameters:
        mode (`str`, *optional*, defaults to `"online"`):
            `"online"`: one HTTP request per job, answers in seconds. `"batch"`: the provider's Batch API, half the
            price, answers within the completion window (24 h); a killed run resumes its batches.
        batch_max_requests (`int`, *optional*, defaults to `50000`):
            Most requests per batch input file (OpenAI: 50,000; Azure: 100,000).
        batch_max_bytes (`int`, *optional*, defaults to `190000000`):
            Most bytes per batch input file (OpenAI and Azure allow 200 MB).
        batch_poll_s (`float`, *optional*, defaults to `30.0`):
            First wait between polls of a batch, in seconds.
        batch_poll_max_s (`float`, *optional*, defaults to `600.0`):
            Longest wait between polls (each wait is 1.5x the last), in seconds.
        batch_completion_window (`str`, *optional*, defaults to `"24h"`):
            The batches' completion window.
    """

    mode: str = field(
        default="online",
        metadata={
            "help": "online: one HTTP request per job, answers in seconds. batch: the provider's Batch API, half the "
            "price, answers within the completion window (24 h); a killed run resumes its batches."
        },
    )
    batch_max_requests: int = field(
        default=50_000, metadata={"help": "Most requests per batch input file (OpenAI: 50,000; Azure: 100,000)."}
    )
    batch_max_bytes: int = field(
        default=190_000_000, metadata={"help": "Most bytes per batch input file (OpenAI and Azure: 200 MB)."}
    )
    batch_poll_s: float = field(default=30.0, metadata={"help": "First wait between polls of a batch, in seconds."})
    batch_poll_max_s: float = field(
        default=600.0, metadata={"help": "Longest wait between polls (each wait is 1.5x the last), in seconds."}
    )
    batch_completion_window: str = field(default="24h", metadata={"help": "The batches' completion window."})

    def __post_init__(self) -> None:
        if self.mode not in ("online", "batch"):
            raise ValueError(f"mode must be online or batch, got {self.mode!r}")
        if self.batch_max_requests < 1 or self.batch_max_bytes < 1:
            raise ValueError("batch_max_requests and batch_max_bytes must be >= 1")
        if self.batch_poll_s <= 0 or self.batch_poll_max_s < self.batch_poll_s:
            raise ValueError("need 0 < batch_poll_s <= batch_poll_max_s")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class _FileState:
    name: str
    keys: list[str]
    file_id: str | None = None
    batch_id: str | None = None
    uploading: bool = False
    creating: bool = False
    merged: bool = False
    status: str | None = None


class BatchState:
    """The intent log of one journal's batches: a folder with the input files and ``batches.jsonl``, one event a line.

    Events: ``init`` (the log's id), ``planned`` (an input file is written), ``uploading``/``uploaded`` (around the
    upload), ``creating``/``created`` (around the batch creation), ``merged`` (its results are in the journal). Each
    line is flushed and fsync'ed before :meth:`record` returns; a line torn by a crash is ignored and cut off.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "batches.jsonl"
        self.files: dict[str, _FileState] = {}
        self.id = ""
        good_end = 0
        if self.path.exists():
            with open(self.path, "rb") as handle:
                for line in handle:
                    try:
                        if not line.endswith(b"\n"):
                            raise ValueError("torn line")
                        self._apply(json.loads(line))
                    except (ValueError, KeyError) as exc:
                        logger.warning("batch log %s: ignoring a bad line (%s)", self.path, exc)
                        break
                    good_end += len(line)
            if good_end < self.path.stat().st_size:
                with open(self.path, "r+b") as handle:
                    handle.truncate(good_end)
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held until close()
        if not self.id:
            self.record({"event": "init", "id": uuid.uuid4().hex})

    def _apply(self, event: Mapping[str, Any]) -> None:
        kind = event["event"]
        if kind == "init":
            self.id = event["id"]
            return
        if kind == "planned":
            self.files[event["file"]] = _FileState(event["file"], list(event["keys"]))
            return
        state = self.files[event["file"]]
        if kind == "uploading":
            state.uploading = True
        elif kind == "uploaded":
            state.file_id = event["file_id"]
        elif kind == "creating":
            state.creating = True
        elif kind == "created":
            state.batch_id = event["batch_id"]
        elif kind == "merged":
            state.merged, state.status = True, event["status"]
        else:
            raise ValueError(f"unknown event {kind!r}")

    def record(self, event: dict[str, Any]) -> None:
        """Append one event, flushed and fsync'ed, and apply it."""
        self._handle.write(json.dumps(event, separators=(",", ":")) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._apply(event)

    def write_input(self, lines: Sequence[bytes], keys: list[str]) -> str:
        """Write one input file atomically (temporary file, fsync, rename) and record it as planned; its name."""
        name = f"{len(self.files):05d}.jsonl"
        path = self.folder / name
        temporary = path.with_suffix(".tmp")
        with open(temporary, "wb") as handle:
            handle.writelines(lines)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        _fsync_dir(self.folder)
        self.record({"event": "planned", "file": name, "keys": keys})
        return name

    def close(self) -> None:
        """Close the log."""
        self._handle.close()


def _api_key(endpoint: EndpointConfig) -> str:
    key = os.environ.get(endpoint.api_key_env, "")
    if key:
        return key
    if endpoint.provider == "openai-compatible":
        return _PLACEHOLDER_KEY
    raise ValueError(f"no API key: set the environment variable {endpoint.api_key_env}")


def build_sdk(endpoint: EndpointConfig, http_client: Any = None) -> openai.OpenAI:
    """A synchronous ``openai.OpenAI`` (or ``AzureOpenAI``, without a deployment in its URL: the files and batches
    resources live at the resource's root) for the endpoint; ``http_client`` is an ``httpx2.Client`` (tests)."""
    common = {
        "api_key": _api_key(endpoint),
        "max_retries": min(endpoint.max_retries, 5),
        "timeout": max(endpoint.timeout_s, 300.0),  # an upload of 200 MB takes a while
        "http_client": http_client,
    }
    if endpoint.provider == "azure":
        return openai.AzureOpenAI(
            azure_endpoint=endpoint.azure_endpoint, api_version=endpoint.azure_api_version, **common
        )
    return openai.OpenAI(base_url=endpoint.base_url, **common)


def request_params(endpoint: EndpointConfig, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The body parameters of a request besides model and messages, as online mode sends them."""
    params: dict[str, Any] = {
        "temperature": endpoint.temperature,
        "max_tokens": endpoint.max_tokens,
        "seed": endpoint.seed,
    }
    if endpoint.response_format != "text":
        params["response_format"] = {"type": endpoint.response_format}
    params.update(overrides)
    return {name: value for name, value in params.items() if value is not None}


def retryable(error: str | None) -> bool:
    """Whether a failed batch request is worth submitting again: server errors, rate limits, timeouts, batches that
    failed, expired or were cancelled, replies that did not parse; not other client errors (400, 401, ...)."""
    category = failure_category(error)
    if category.startswith("http "):
        status = int(category.split()[1])
        return status in _RETRYABLE_STATUS or status >= 500
    return True


class BatchRunner:
    """Runs jobs through the Batch API into a journal (see the module docstring).

    Args:
        endpoint: the endpoint (``openai``, ``azure`` or an ``openai-compatible`` server with a Batch API).
        config: batch settings (file limits, polling).
        journal: the journal this process appends to (the same as online mode's).
        state_dir: the folder of the intent log and input files (default: ``<journal folder>/batches/<journal stem>``).
        done: results already known from other journals (other shards), by key.
        sdk: an ``openai.OpenAI`` client to use (default: built from ``endpoint``).
    """

    def __init__(
        self,
        endpoint: EndpointConfig,
        config: BatchConfig,
        journal: Journal,
        state_dir: str | os.PathLike | None = None,
        done: Mapping[str, CompletionResult] | None = None,
        sdk: openai.OpenAI | None = None,
    ) -> None:
        self.endpoint, self.config, self.journal = endpoint, config, journal
        folder = state_dir or journal.path.parent / "batches" / journal.path.stem
        self.state = BatchState(folder)
        self.done = dict(done or {})
        self._own_sdk = sdk is None
        self.sdk = sdk or build_sdk(endpoint)
        self.azure = endpoint.provider == "azure"
        self.url = "/chat/completions" if self.azure else "/v1/chat/completions"
        self.model = (endpoint.azure_deployment or endpoint.model) if self.azure else endpoint.model
        self.tries: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()  # files, batches, submitted, merged, failed_batches, ...
        self.failure_reasons: Counter[str] = Counter()  # failed requests by reason (http 500, timeout, ...)

    def close(self) -> None:
        """Close the intent log (the SDK client too, when this runner built it)."""
        self.state.close()
        if self._own_sdk:
            self.sdk.close()

    # -- what to send ----------------------------------------------------------------------------------------------
    def _ok(self, key: str) -> bool:
        result = self.journal.done(key) or self.done.get(key)
        return result is not None and result.ok

    def _wants(self, key: str) -> bool:
        if self._ok(key):
            return False
        result = self.journal.done(key)
        if result is None or self.tries[key] == 0:  # a failure journaled by an earlier run is sent again, as online
            return True
        return retryable(result.error) and self.tries[key] <= self.endpoint.max_retries

    def _plan(self, jobs: Sequence[Any], build_messages: Callable[[Any], list[dict[str, Any]]]) -> list[str]:
        """Write the jobs as input files within the limits; the files' names."""
        names, lines, keys, size = [], [], [], 0
        limit_bytes, limit_requests = self.config.batch_max_bytes, self.config.batch_max_requests
        for job in jobs:
            body = {
                "model": self.model,
                "messages": build_messages(job),
                **request_params(self.endpoint, dict(job.params)),
            }
            line = {"custom_id": job.key, "method": "POST", "url": self.url, "body": body}
            data = (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
            if len(data) > limit_bytes:
                raise ValueError(
                    f"the request of {job.task} {job.record_id} (key {job.key[:12]}) is {len(data):,} bytes, over "
                    f"batch_max_bytes={limit_bytes:,}: send it online or raise the limit"
                )
            if lines and (len(lines) >= limit_requests or size + len(data) > limit_bytes):
                names.append(self.state.write_input(lines, keys))
                lines, keys, size = [], [], 0
            lines.append(data)
            keys.append(job.key)
            size += len(data)
            self.tries[job.key] += 1
        if lines:
            names.append(self.state.write_input(lines, keys))
        return names

    # -- remote calls ----------------------------------------------------------------------------------------------
    def _remote_name(self, name: str) -> str:
        return f"vital-{self.state.id[:12]}-{name}"

    def _find_file(self, name: str) -> str | None:
        """The id of this input file if an earlier (killed) run uploaded it."""
        size = (self.state.folder / name).stat().st_size
        for found in self.sdk.files.list(purpose="batch"):
            if found.filename == self._remote_name(name) and found.bytes == size:
                return found.id
        return None

    def _find_batch(self, name: str, file_id: str) -> str | None:
        """The id of this file's batch if an earlier (killed) run created it."""
        for found in self.sdk.batches.list(limit=100):
            metadata = found.metadata or {}
            if found.input_file_id == file_id and metadata.get("vital_file") == name:
                return found.id
        return None

    def _submit(self, name: str) -> None:
        """Upload the file and create its batch, unless an earlier run did (found in the log or on the server)."""
        state, record = self.state.files[name], self.state.record
        if state.file_id is None:
            file_id = self._find_file(name) if state.uploading else None
            if file_id is None:
                record({"event": "uploading", "file": name})
                with open(self.state.folder / name, "rb") as handle:
                    uploaded = self.sdk.files.create(
                        file=(self._remote_name(name), handle, "application/jsonl"), purpose="batch"
                    )
                file_id = uploaded.id
                self.counts["files"] += 1
            record({"event": "uploaded", "file": name, "file_id": file_id})
        assert state.file_id is not None
        if state.batch_id is None:
            batch_id = self._find_batch(name, state.file_id) if state.creating else None
            if batch_id is None:
                record({"event": "creating", "file": name})
                batch = self.sdk.batches.create(
                    input_file_id=state.file_id,
                    endpoint=self.url,  # type: ignore[arg-type] - Azure's is /chat/completions
                    completion_window=self.config.batch_completion_window,  # type: ignore[arg-type]
                    metadata={"vital_file": name, "vital_log": self.state.id},
                )
                batch_id = batch.id
                self.counts["batches"] += 1
                self.counts["submitted"] += len(state.keys)
            record({"event": "created", "file": name, "batch_id": batch_id})
            logger.info("batch %s: %d request(s) from %s", batch_id, len(state.keys), name)

    def _drive(self, names: Sequence[str]) -> None:
        """Submit the files, poll their batches with backoff until each ends, and merge each as it ends."""
        for name in names:
            self._submit(name)
        waiting = [name for name in names if not self.state.files[name].merged]
        delay = self.config.batch_poll_s
        while waiting:
            for name in list(waiting):
                batch_id = self.state.files[name].batch_id
                try:
                    batch = self.sdk.with_options(max_retries=0).batches.retrieve(batch_id)
                except openai.APIError as exc:  # a failed poll is not a failed batch: poll again later
                    logger.warning("polling batch %s failed (%s); polling again", batch_id, type(exc).__name__)
                    continue
                if batch.status in _TERMINAL:
                    self._merge(name, batch)
                    waiting.remove(name)
            if waiting:
                time.sleep(delay)
                delay = min(delay * 1.5, self.config.batch_poll_max_s)

    # -- results ---------------------------------------------------------------------------------------------------
    def _download(self, file_id: str | None) -> list[bytes]:
        if not file_id:
            return []
        return self.sdk.files.content(file_id).content.splitlines()

    def _merge(self, name: str, batch: Any) -> None:
        """Journal the result of every request of a finished batch (a failure for those without one), then log it."""
        state = self.state.files[name]
        wanted = set(state.keys)
        results: dict[str, CompletionResult] = {}
        unreadable = 0
        elapsed = float((batch.completed_at or batch.expired_at or batch.cancelled_at or batch.failed_at or 0) or 0)
        elapsed = max(0.0, elapsed - float(batch.created_at or 0)) if elapsed else 0.0
        for source in (batch.output_file_id, batch.error_file_id):
            for number, line in enumerate(self._download(source), start=1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    key = entry["custom_id"]
                except (ValueError, KeyError, TypeError):
                    unreadable += 1
                    logger.warning("batch %s: file %s line %d is not a readable result", batch.id, source, number)
                    continue
                if key in wanted:
                    results[key] = self._result(key, entry, elapsed)
        missing = f"batch {batch.status}: no result"
        if batch.status == "failed" and batch.errors and batch.errors.data:
            missing = f"batch failed: {'; '.join(str(e.message) for e in batch.errors.data)[:300]}"
        elif unreadable:
            missing += f" ({unreadable} unreadable output line(s))"
        for key in state.keys:
            result = results.get(key) or CompletionResult(
                key=key, attempts=self.tries[key], elapsed_s=elapsed, error=missing, mode="batch"
            )
            if self._ok(key):
                continue  # merged before a kill, or answered online meanwhile
            self.journal.append(result)
            self.counts["succeeded" if result.ok else "failed"] += 1
            if not result.ok:
                self.failure_reasons[failure_category(result.error)] += 1
        self.journal.sync()
        self.state.record({"event": "merged", "file": name, "status": batch.status})
        self.counts[f"batches_{batch.status}"] += 1
        logger.info(
            "batch %s %s: %d of %d request(s) answered",
            batch.id,
            batch.status,
            sum(r.ok for r in results.values()),
            len(state.keys),
        )

    def _result(self, key: str, entry: Mapping[str, Any], elapsed: float) -> CompletionResult:
        """One output or error line as a result."""
        attempts = max(1, self.tries[key])
        failed = CompletionResult(key=key, attempts=attempts, elapsed_s=elapsed, mode="batch")
        if entry.get("error"):
            error = entry["error"]
            failed.error = f"batch error {error.get('code', '')}: {str(error.get('message', ''))[:300]}"
            return failed
        response = entry.get("response") or {}
        status, reply = response.get("status_code"), response.get("body")
        if status != 200:
            detail = reply.get("error", {}).get("message", "") if isinstance(reply, dict) else ""
            failed.error = f"http {status}" + (f": {str(detail)[:300]}" if detail else "")
            return failed
        choices = reply.get("choices") if isinstance(reply, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            failed.error = "malformed reply: no choices"
            return failed
        message = choices[0].get("message")
        if not isinstance(message, dict):
            failed.error = "malformed reply: no message"
            return failed
        text = message_text(message.get("content"))
        usage = reply.get("usage") or {}
        prompt_tokens, completion_tokens = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
        reported = reply.get("model") if isinstance(reply.get("model"), str) else None
        refusal = message.get("refusal")
        return CompletionResult(
            key=key,
            text=text,
            finish_reason=choices[0].get("finish_reason"),
            prompt_tokens=int(prompt_tokens),
            completion_tokens=int(completion_tokens),
            cost_usd=cost_usd(
                int(prompt_tokens),
                int(completion_tokens),
                model=self.endpoint.model,
                reported_model=reported,
                prices=self.endpoint.price_table,
                provider=self.endpoint.provider,
                batch=True,
            ),
            elapsed_s=elapsed,
            attempts=attempts,
            model=reported,
            refusal=refusal if isinstance(refusal, str) else None,
            system_fingerprint=reply.get("system_fingerprint"),
            mode="batch",
        )

    # -- the run ---------------------------------------------------------------------------------------------------
    def run(
        self, jobs: Sequence[Any], build_messages: Callable[[Any], list[dict[str, Any]]]
    ) -> dict[str, CompletionResult]:
        """Finish the batches an earlier run left, then send the jobs no journal holds as a success, round after
        round (failures retried as online), and return every job's result by key."""
        unfinished = [name for name, state in self.state.files.items() if not state.merged]
        if unfinished:
            logger.info("resuming %d batch(es) left by an earlier run", len(unfinished))
            for name in unfinished:
                self.tries.update(self.state.files[name].keys)
            self._drive(unfinished)
        unique = list({job.key: job for job in jobs}.values())
        while True:
            pending = [job for job in unique if self._wants(job.key)]
            if not pending:
                break
            self._drive(self._plan(pending, build_messages))
        results = {}
        for job in unique:
            result = self.journal.done(job.key)
            results[job.key] = result if result is not None and result.ok else (self.done.get(job.key) or result)
        return results


def run_batch_jobs(
    jobs: Sequence[Any],
    endpoint: EndpointConfig,
    build_messages: Callable[[Any], list[dict[str, Any]]],
    journal_path: str | os.PathLike,
    config: BatchConfig,
    done: Mapping[str, CompletionResult] | None = None,
    followup: Callable[[Any, CompletionResult], Any] | None = None,
) -> tuple[int, int]:
    """Run ``jobs`` (and their follow-ups, round after round) through the Batch API into the journal at
    ``journal_path``; returns (jobs already done, jobs in all rounds) as the online runner does."""
    done = dict(done or {})
    # A batch's results are synced once, after its last append and before it is logged as merged: a kill before that
    # leaves the batch unmerged, and the rerun downloads and merges it again (skipping what is already journaled).
    with Journal.open(journal_path, fsync_every=1 << 30, group_commit=False) as journal:
        runner = BatchRunner(endpoint, config, journal, done=done)
        try:
            round_, resumed, total = list(jobs), 0, 0
            while round_:
                resumed += sum(1 for job in round_ if (r := journal.done(job.key) or done.get(job.key)) and r.ok)
                total += len(round_)
                results = runner.run(round_, build_messages)
                round_ = [nxt for job in round_ if followup and (nxt := followup(job, results[job.key])) is not None]
        finally:
            runner.close()
        failed = runner.counts["failed"]
        reasons = ", ".join(f"{reason}: {count}" for reason, count in runner.failure_reasons.most_common())
        logger.log(
            logging.WARNING if failed else logging.INFO,  # failures are recorded, and said out loud
            "batch mode: %d file(s) uploaded, %d batch(es) created, %d request(s) submitted, %s; %d succeeded, "
            "%d failed%s",
            runner.counts["files"],
            runner.counts["batches"],
            runner.counts["submitted"],
            {k: v for k, v in runner.counts.items() if k.startswith("batches_")},
            runner.counts["succeeded"],
            failed,
            f" ({reasons})" if reasons else "",
        )
    return resumed, total
