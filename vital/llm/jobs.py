"""Keyed jobs over the client: what the API stages (generate, rate, evaluate) share.

A stage plans one `Job` per request it needs, keyed by everything that determines the answer (model, inputs,
prompt wording, parameters), without building the request. `run_jobs_sharded` then sends, from this process's shard,
only the jobs that no journal holds as a success, building each request (with its images) just before it is sent,
and returns every job's result once all shards are done::

    jobs = [Job(key=..., index=i, record_id=row_id, task="rating") for ...]
    results = run_jobs_sharded(jobs, endpoint, build_messages, journal_dir, shard=args.shard)
    if results is None:  # a shard, or a process other than the main one: nothing to push
        return []
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vital.llm.client import AsyncLLMClient, ChatRequest, EndpointConfig
from vital.llm.journal import CompletionResult, Journal, merge_journals, parse_shard, shard_path


logger = logging.getLogger(__name__)
JOURNAL_GLOB = "journal*.jsonl"


@dataclass(frozen=True)
class Job:
    """One request to make; ``key`` names it in the journals.

    Attributes:
        key: the stable request key (see `vital.llm.request_key`).
        index: the row of the input dataset the request is about.
        record_id: that row's id (a pair id, a candidate id, ...).
        task: what the request asks (``conversation``, ``answer_pairs``, ``rating``, ...).
        sample: which of several requests about one row (a sample index, a turn, a retry).
        demo_ids: demonstrations shown in the prompt.
        params: per-request sampling overrides, as sorted (name, value) pairs.
    """

    key: str
    index: int
    record_id: str
    task: str
    sample: int = 0
    demo_ids: tuple[str, ...] = ()
    params: tuple[tuple[str, Any], ...] = ()


def image_sha256(cell: Mapping[str, Any]) -> str:
    """sha256 of an undecoded image cell (``{"bytes", "path"}``), the image's identity in a request key."""
    data = cell.get("bytes")
    if data is None:
        with open(cell["path"], "rb") as f:
            data = f.read()
    return hashlib.sha256(data).hexdigest()


class _LazyRequests:
    """The requests of some jobs, built (with their images) only as the client consumes them; sized for progress."""

    def __init__(self, jobs: Sequence[Job], build_messages: Callable[[Job], list[dict[str, Any]]]):
        self.jobs, self.build_messages = jobs, build_messages

    def __len__(self) -> int:
        return len(self.jobs)

    def __iter__(self):
        for job in self.jobs:
            yield ChatRequest(self.build_messages(job), dict(job.params), key=job.key)


async def execute_jobs(
    client: AsyncLLMClient, jobs: Sequence[Job], build_messages, done: Mapping[str, CompletionResult], journal
) -> tuple[dict[str, CompletionResult], int]:
    """Send the jobs that ``done`` does not hold as successes, appending each result to ``journal`` as it finishes.
    Requests are built lazily, as the client's bounded window frees up, so memory stays flat however many jobs.

    Returns every job's result by key, and how many were already done.
    """
    results = {job.key: done[job.key] for job in jobs if job.key in done and done[job.key].ok}
    todo = [job for job in jobs if job.key not in results]
    for job, result in zip(todo, await client.run(_LazyRequests(todo, build_messages), journal=journal), strict=True):
        results[job.key] = result
    return results, len(jobs) - len(todo)


def run_jobs_sharded(
    jobs: Sequence[Job],
    endpoint: EndpointConfig,
    build_messages: Callable[[Job], list[dict[str, Any]]],
    journal_dir: str | Path,
    shard: str | None = None,
    followup: Callable[[Job, CompletionResult], Job | None] | None = None,
    batch: Any = None,
) -> dict[str, CompletionResult] | None:
    """Run this process's share of ``jobs`` and, on the process that should push, return every job's result.

    ``followup(job, result)`` may ask for another request after a result (e.g. a judge reply that did not parse is
    asked again): follow-ups are sent by the process that ran the job, round after round, and are part of the
    returned results. The function must be deterministic so that the merge finds the same follow-ups.

    The share is ``--shard i/n`` when given (one machine of several: nothing is returned, the journal is the
    output), else this process's rank among the `accelerate launch` processes. Each process appends to its own
    journal in ``journal_dir``; the main process waits for the others, merges every journal and checks that no job
    is missing (a shard not run yet is an error, not a silently smaller dataset).

    ``batch`` (a `vital.llm.batch.BatchConfig` with ``mode="batch"``) sends this process's share through the
    provider's Batch API instead, into the same journal under the same keys.
    """
    from accelerate import PartialState

    state = PartialState()
    index, count = parse_shard(shard) if shard else (state.process_index, state.num_processes)
    journal_dir = Path(journal_dir)
    journal_dir.mkdir(parents=True, exist_ok=True)
    mine = [job for i, job in enumerate(jobs) if i % count == index]
    done = merge_journals(sorted(journal_dir.glob(JOURNAL_GLOB)))

    async def send() -> tuple[int, int]:
        async with AsyncLLMClient(endpoint) as client:
            with Journal.open(shard_path(journal_dir / "journal.jsonl", index, count)) as journal:
                round_, resumed, total = mine, 0, 0
                while round_:
                    results, already = await execute_jobs(client, round_, build_messages, done, journal)
                    resumed, total = resumed + already, total + len(round_)
                    round_ = _followups(round_, results, followup)
                return resumed, total

    if batch is not None and batch.mode == "batch":
        from vital.llm.batch import run_batch_jobs

        journal_path = shard_path(journal_dir / "journal.jsonl", index, count)
        resumed, total = run_batch_jobs(mine, endpoint, build_messages, journal_path, batch, done, followup)
    else:
        resumed, total = asyncio.run(send())
    logger.info("%d request(s) sent, %d answered from the journals (this process)", total - resumed, resumed)
    if shard:
        logger.info("shard %s done; run without --shard over the collected journals to merge and push", shard)
        return None
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    done = merge_journals(sorted(journal_dir.glob(JOURNAL_GLOB)))
    everything, round_ = list(jobs), list(jobs)
    while round_:
        missing = sum(1 for job in round_ if job.key not in done)
        if missing:
            raise RuntimeError(f"{missing} request(s) have no journaled result; run the missing shards first")
        round_ = _followups(round_, done, followup)
        everything += round_
    return {job.key: done[job.key] for job in everything}


def _followups(jobs: Sequence[Job], results: Mapping[str, CompletionResult], followup) -> list[Job]:
    if followup is None:
        return []
    return [nxt for job in jobs if (nxt := followup(job, results[job.key])) is not None]
