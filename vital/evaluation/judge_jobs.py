"""What the two evaluation judges share: re-asking a reply that did not parse, and reading a job's chain of replies.

A judge job's follow-up (see `vital.llm.jobs.run_jobs_sharded`) is the same request with a reminder appended; its
task is ``<task>-retry-<n>`` and its key derives from the original's. `read_chain` walks a job and its follow-ups and
returns the first reply that parses, or the last error: never a guess.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vital.evaluation.judge_parsing import ParseError
from vital.llm import CompletionResult
from vital.llm.jobs import Job


def base_task(task: str) -> str:
    """``chat-judge-retry-1`` -> ``chat-judge``."""
    return task.split("-retry-", 1)[0]


def attempt_of(job: Job) -> int:
    """0 for a first ask, n for the n-th re-ask."""
    return int(job.task.rsplit("-retry-", 1)[1]) if "-retry-" in job.task else 0


def reask_job(job: Job, result: CompletionResult, parse: Callable[[str], Any], retries: int = 1) -> Job | None:
    """The follow-up of a reply that did not parse (the same request with a reminder), or None.

    Failed requests are not re-asked here (the client already retried them), nor replies that parse, nor a job that
    used up ``retries``.
    """
    attempt = attempt_of(job)
    if not result.ok or attempt >= retries:
        return None
    try:
        parse(result.text)
    except ParseError:
        key = hashlib.sha256(f"{job.key}:retry:{attempt + 1}".encode()).hexdigest()
        return Job(
            key,
            job.index,
            job.record_id,
            f"{base_task(job.task)}-retry-{attempt + 1}",
            job.sample,
            job.demo_ids,
            job.params,
        )
    return None


@dataclass
class ChainOutcome:
    """What a judge said about one request after its re-asks: ``value`` (parsed) or ``error``, never both."""

    value: Any = None
    error: str | None = None
    raw: str = ""  # the reply that was used (the last one when none parsed)
    replies: list[str] = field(default_factory=list)  # every reply, in order
    attempts: int = 0
    model: str = ""
    cost_usd: float = 0.0


def read_chain(
    job: Job,
    results: Mapping[str, CompletionResult],
    parse: Callable[[str], Any],
    retries: int,
    judge_model: str,
) -> ChainOutcome:
    """Walk ``job`` and its re-asks: the first reply that ``parse`` reads, else the reason it could not be read."""
    out = ChainOutcome(model=judge_model)
    current: Job | None = job
    while current is not None:
        result = results[current.key]
        out.attempts += 1
        out.cost_usd += result.cost_usd
        out.raw, out.model = result.text, result.model or judge_model
        out.replies.append(result.text)
        if not result.ok:
            out.error = f"request failed: {result.error}"
            return out
        try:
            out.value, out.error = parse(result.text), None
            return out
        except ParseError as e:
            out.error = f"unparseable after {out.attempts} attempt(s): {e.reason}"
        current = reask_job(current, result, parse, retries)
    return out


def error_reason(error: str | None) -> str:
    """A short category of a chain's error, for counts: ``request failed``, ``no scores``, ``no verdict``..."""
    if not error:
        return ""
    if error.startswith("request failed"):
        return "request failed"
    return error.rsplit(": ", 1)[-1]
