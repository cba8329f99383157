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
import os
import re
import socket
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vital.llm.client import AsyncLLMClient, ChatRequest, EndpointConfig, failure_category
from vital.llm.journal import CompletionResult, Journal, _prefer, merge_journals, parse_shard, shard_path
from vital.llm.limits import Budget


logger = logging.getLogger(__name__)
JOURNAL_GLOB = "journal*.jsonl"
# A `--shard i/n` run's journal is journal-shard-0000i-of-0000n.jsonl; the processes of one `accelerate launch` write
# journal-0000i-of-0000n.jsonl. The names tell a run over the collected journals whether it merges machines' shards.
SHARD_JOURNAL = "journal-shard.jsonl"
_SHARD_NAME = re.compile(r"journal-shard-(\d+)-of-(\d+)\.jsonl")


def shard_count(journal_dir: str | Path) -> int:
    """``n`` when ``journal_dir`` holds the journals of ``--shard i/n`` runs, else 0.

    Raises:
        ValueError: the folder mixes the journals of shard runs with different counts.
    """
    counts = {
        int(m.group(2)) for p in Path(journal_dir).glob("journal-shard-*") if (m := _SHARD_NAME.fullmatch(p.name))
    }
    if len(counts) > 1:
        raise ValueError(
            f"{journal_dir} holds the journals of shard runs of {sorted(counts)} shards: keep one run's journals"
        )
    return counts.pop() if counts else 0


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


class JobResults(dict):
    """Every job's result by key (a dict), and ``summary``: how the run used the API, for logs and cards (the rate
    budget and how it was shared, and the requests resent after a kill with their cost)."""

    summary: dict[str, Any]

    def summary_of(self, keys: Iterable[str]) -> dict[str, Any]:
        """``summary`` with the resent requests counted over ``keys`` only: what one artifact's card says when a run
        made several (generate's candidates and answer pairs)."""
        resent = [result for key in keys if (result := self.get(key)) is not None and result.resent_after_kill]
        return {**self.summary, "resent_after_kill": len(resent), "resent_cost_usd": sum(r.cost_usd for r in resent)}


class NoRepliesError(RuntimeError):
    """Not one request of a run got a reply (e.g. no server at the endpoint's address): the stage stops and pushes
    nothing rather than push a dataset of failures."""


def require_some_replies(results: Mapping[str, CompletionResult], journal_dir: str | Path) -> None:
    """Raise `NoRepliesError`, naming the failure reasons and counts, when ``results`` holds requests and not one of
    them succeeded. Some failures are fine: the stages record them (e.g. a `failures` config)."""
    if not results or any(result.ok for result in results.values()):
        return
    reasons = Counter(failure_category(result.error) or "no reply" for result in results.values())
    described = ", ".join(f"{reason}: {count}" for reason, count in reasons.most_common())
    raise NoRepliesError(
        f"all {len(results)} request(s) failed ({described}); nothing was pushed. Check the endpoint (--base_url, "
        f"--model, the API key) and rerun: the journal in {journal_dir} keeps what was done and a rerun resumes "
        "from it (failed requests are sent again)"
    )


def describe_budget(endpoint: EndpointConfig, processes: int = 1, shards: int = 1) -> str:
    """The rate budget of a run in words, as its card shows it."""
    parts = []
    if endpoint.requests_per_minute > 0:
        parts.append(f"{endpoint.requests_per_minute:g} requests/min")
    if endpoint.tokens_per_minute > 0:
        parts.append(f"{endpoint.tokens_per_minute:g} tokens/min")
    if not parts:
        return "none set (no requests- or tokens-per-minute limit)"
    text = " and ".join(parts) + " for the whole run"
    if shards > 1:
        text += f"; each of the {shards} shards (--shard i/{shards}) took 1/{shards} of it"
    if processes > 1:
        text += f"; the {processes} processes of a machine shared one budget (a file-locked bucket)"
    return text


SENT_BY = {"online": "online", "batch": "through the Batch API"}
"""How a card names each ``CompletionResult.mode``."""


def sent_by(results: Iterable[CompletionResult]) -> str:
    """How the requests behind ``results`` were sent and what each way cost, for a card: e.g. ``15 online ($0.2168),
    6 through the Batch API ($0.0542)``.

    Read from each result, not from the run's ``--mode``: a request answered from the journal counts the way it was
    sent then (a batch-mode rerun over an online journal sent nothing through the Batch API, and paid online prices).
    """
    totals: dict[str | None, list] = {}
    for result in results:
        entry = totals.setdefault(result.mode, [0, 0.0])
        entry[0] += 1
        entry[1] += result.cost_usd
    if not totals:
        return "none"
    order = [*SENT_BY, *sorted({m for m in totals if m not in SENT_BY and m is not None}), None]
    return ", ".join(
        f"{totals[mode][0]} {SENT_BY.get(mode, mode) if mode else 'journaled before the way was recorded'} "
        f"(${totals[mode][1]:.4f})"
        for mode in order
        if mode in totals
    )


def api_run_summary(
    results: Mapping[str, CompletionResult], endpoint: EndpointConfig, processes: int, shards: int
) -> dict[str, Any]:
    """What a card says about a stage's API use beyond its usage totals (see `JobResults`)."""
    resent = [r for r in results.values() if r.resent_after_kill]
    return {
        "budget": describe_budget(endpoint, processes, shards),
        "processes": processes,
        "shards": shards,
        "resent_after_kill": len(resent),
        "resent_cost_usd": sum(r.cost_usd for r in resent),
    }


def shared_budget(endpoint: EndpointConfig, journal_dir: Path, shards: int = 1, machines: int = 1) -> Budget:
    """The rate budget of one process of a run: the endpoint's budget, split evenly over ``shards`` (``--shard i/n``
    on several machines) or ``machines`` (a multi-node launch), and shared through a locked file in ``journal_dir``
    by every process of this machine."""
    parts = max(shards, machines, 1)
    path = journal_dir / f"rate-budget-{socket.gethostname()}.bin"
    return Budget(endpoint.requests_per_minute, endpoint.tokens_per_minute, share=1 / parts, shared_path=path)


def run_jobs_sharded(
    jobs: Sequence[Job],
    endpoint: EndpointConfig,
    build_messages: Callable[[Job], list[dict[str, Any]]],
    journal_dir: str | Path,
    shard: str | None = None,
    followup: Callable[[Job, CompletionResult], Job | None] | None = None,
    batch: Any = None,
) -> JobResults | None:
    """Run this process's share of ``jobs`` and, on the process that should push, return every job's result.

    ``followup(job, result)`` may ask for another request after a result (e.g. a judge reply that did not parse is
    asked again): follow-ups are sent by the process that ran the job, round after round, and are part of the
    returned results. The function must be deterministic so that the merge finds the same follow-ups.

    The share is ``--shard i/n`` when given (one machine of several: nothing is returned, the journal is the
    output, and the rate budget is 1/n of the configured one), else this process's rank among the
    `accelerate launch` processes, which share one rate budget. Each process appends to its own journal in
    ``journal_dir``, read once; the main process waits for the others, merges every journal and checks that no job
    is missing (a shard not run yet is an error, not a silently smaller dataset).

    ``batch`` (a `vital.llm.batch.BatchConfig` with ``mode="batch"``) sends this process's share through the
    provider's Batch API instead, into the same journal under the same keys.

    Raises:
        NoRepliesError: not one request got a reply (the journals keep what was done; a rerun resumes).
    """
    from vital.runner import process_state

    state = process_state()
    index, count = parse_shard(shard) if shard else (state.process_index, state.num_processes)
    journal_dir = Path(journal_dir)
    journal_dir.mkdir(parents=True, exist_ok=True)
    # A run without --shard over the journals of shard runs merges them and sends nothing: a missing shard is an error
    # (sending its requests from here would pay for them twice if that shard is still running, over its budget).
    merging = 0 if shard else shard_count(journal_dir)
    mine = [] if merging else [job for i, job in enumerate(jobs) if i % count == index]
    own_path = shard_path(journal_dir / (SHARD_JOURNAL if shard else "journal.jsonl"), index, count)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes) or 1)
    machines = 1 if shard else max(1, state.num_processes // max(1, local))
    budget = shared_budget(endpoint, journal_dir, shards=count if shard else 1, machines=machines)
    if not merging:
        logger.info("rate budget of this process: %s", budget.describe())

    def others() -> list[Path]:
        return [path for path in sorted(journal_dir.glob(JOURNAL_GLOB)) if path.resolve() != own_path.resolve()]

    def merged(journal: Journal) -> dict[str, CompletionResult]:
        done = merge_journals(others())  # other processes' or shards' journals (one load each)
        for key, result in journal.results().items():
            done[key] = _prefer(done.get(key), result)
        return done

    async def send(journal: Journal, done: dict[str, CompletionResult]) -> tuple[int, int]:
        async with AsyncLLMClient(endpoint, budget=budget) as client:
            round_, resumed, total = mine, 0, 0
            while round_:
                results, already = await execute_jobs(client, round_, build_messages, done, journal)
                resumed, total = resumed + already, total + len(round_)
                round_ = _followups(round_, results, followup)
            return resumed, total

    if merging:
        logger.info("merging the journals of %d shards (--shard i/%d) in %s; this run sends nothing", merging, merging,
                    journal_dir)  # fmt: skip
        resumed = total = 0
        journal = Journal.open(own_path)
        journal.close()
    elif batch is not None and batch.mode == "batch":
        from vital.llm.batch import run_batch_jobs

        # The Batch API writes this process's journal itself (same keys as online); read it back once afterwards.
        resumed, total = run_batch_jobs(
            mine, endpoint, build_messages, own_path, batch, merge_journals(others()), followup
        )
        journal = Journal.open(own_path)
        journal.close()
    else:
        with Journal.open(own_path) as journal:  # this process's journal: loaded once, here
            resumed, total = asyncio.run(send(journal, merged(journal)))
    # In batch mode "finished in this run" includes the batches an earlier run left, merged now (not submitted again).
    if not merging:
        logger.info(
            "%d request(s) finished in this run, %d were already in the journals (this process)",
            total - resumed,
            resumed,
        )
    if shard:
        logger.info("shard %s done; run without --shard over the collected journals to merge and push", shard)
        return None
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    done = merged(journal)  # the others' journals again (they grew meanwhile); ours is in memory
    everything, round_, first = list(jobs), list(jobs), True
    while round_:
        missing = [i for i, job in enumerate(round_) if job.key not in done]
        if missing:
            raise RuntimeError(_missing_message(missing, first, merging, journal_dir))
        round_, first = _followups(round_, done, followup), False
        everything += round_
    results = JobResults({job.key: done[job.key] for job in everything})
    require_some_replies(results, journal_dir)
    results.summary = api_run_summary(results, endpoint, state.num_processes, max(1, merging))
    if results.summary["resent_after_kill"]:
        logger.warning(
            "%d request(s) were resent after a kill (in flight when it died), about $%.4f paid twice",
            results.summary["resent_after_kill"],
            results.summary["resent_cost_usd"],
        )
    return results


def _missing_message(missing: list[int], first_round: bool, shards: int, journal_dir: Path) -> str:
    """Why a merge stops: how many requests (at these positions of their round) have no journaled result and, over
    the journals of shard runs, whose they are (a job's shard is its position in the first round modulo ``shards``)."""
    text = f"{len(missing)} request(s){'' if first_round else ' (follow-ups)'} have no journaled result"
    if not shards:
        return text + "; nothing was pushed, rerun to send them"
    if first_round:
        parts = []
        for index, count in sorted(Counter(i % shards for i in missing).items()):
            path = shard_path(journal_dir / SHARD_JOURNAL, index, shards)
            parts.append(f"shard {index}/{shards}: {count}" + ("" if path.exists() else f", no {path.name} here"))
        text += f" ({'; '.join(parts)})"
    return (
        f"{text}. Run those shards (--shard i/{shards}), or copy their journals into {journal_dir}, then merge again; "
        "this run sent nothing and pushed nothing"
    )


def _followups(jobs: Sequence[Job], results: Mapping[str, CompletionResult], followup) -> list[Job]:
    if followup is None:
        return []
    return [nxt for job in jobs if (nxt := followup(job, results[job.key])) is not None]
