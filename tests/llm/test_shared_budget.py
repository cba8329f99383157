"""One rate budget for the processes of a run, a shard's share of it, requests resent after a kill, and a restart
that reads its journal once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter

import pytest

import vital.llm.journal as journal_module
from vital.llm import ChatRequest, EndpointConfig, Journal, run_sync
from vital.llm.jobs import Job, describe_budget, run_jobs_sharded
from vital.testing.standin import StandInServer


WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from vital.llm import AsyncLLMClient, ChatRequest, EndpointConfig
    from vital.llm.limits import Budget

    base_url, budget_path, tag, count, rpm = sys.argv[1:6]
    config = EndpointConfig(provider="openai-compatible", model="m", base_url=base_url, concurrency=4,
                            requests_per_minute=float(rpm))

    async def main():
        budget = Budget(config.requests_per_minute, shared_path=budget_path)
        async with AsyncLLMClient(config, budget=budget) as client:
            await client.run([ChatRequest([{"role": "user", "content": f"{tag}-{i}"}]) for i in range(int(count))],
                             progress=False)

    asyncio.run(main())
    """
)


def max_in_window(times: list[float], window: float) -> int:
    times, best, start = sorted(times), 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


@pytest.mark.slow
@pytest.mark.parametrize("processes", [2, 4])
def test_processes_on_one_machine_share_one_request_budget(processes, tmp_path):
    """N processes, each able to send 80 requests a second, share 1,200 a minute (20 a second): the server sees
    the budget, not N times it, and the budget is used."""
    rpm, total = 1200, 100
    with StandInServer(latency_ms=50) as server:
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    WORKER,
                    server.base_url,
                    str(tmp_path / "budget"),
                    f"p{p}",
                    str(total // processes),
                    str(rpm),
                ]
            )
            for p in range(processes)
        ]
        for worker in workers:
            assert worker.wait(timeout=120) == 0
        arrivals = sorted(server.stats.arrivals)
    assert len(arrivals) == total
    share = rpm / 60  # per second
    for window in (1.0, 2.0, 3.0):
        # The bucket holds one request: any window holds at most its share plus that one.
        assert max_in_window(arrivals, window) <= share * window * 1.05 + 1, window
    span = arrivals[-1] - arrivals[0]
    assert (total - 1) / span >= share * 0.9  # shared, not starved


def job(i: int) -> Job:
    return Job(key=f"key-{i}", index=i, record_id=f"r{i}", task="t")


def build(job: Job) -> list[dict]:
    return [{"role": "user", "content": job.record_id}]


@pytest.mark.slow
def test_a_restart_reads_its_journal_once(tmp_path, monkeypatch):
    with StandInServer() as server:
        endpoint = EndpointConfig(provider="openai-compatible", model="m", base_url=server.base_url)
        jobs = [job(i) for i in range(6)]
        assert len(run_jobs_sharded(jobs, endpoint, build, tmp_path)) == 6
        before = journal_module.LOADS
        results = run_jobs_sharded(jobs, endpoint, build, tmp_path)  # the restart: everything is journaled
        assert journal_module.LOADS - before == 1
        assert len(results) == 6 and server.stats.requests == 6


def test_shards_take_their_share_of_the_budget_and_the_merge_says_so(tmp_path, monkeypatch):
    import vital.llm.jobs as jobs_module

    budgets = []

    class Recording(jobs_module.AsyncLLMClient):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            budgets.append(self.budget)

    monkeypatch.setattr(jobs_module, "AsyncLLMClient", Recording)
    with StandInServer() as server:
        endpoint = EndpointConfig(
            provider="openai-compatible", model="m", base_url=server.base_url, requests_per_minute=6000
        )
        jobs = [job(i) for i in range(4)]
        for shard in ("0/2", "1/2"):
            assert run_jobs_sharded(jobs, endpoint, build, tmp_path, shard=shard) is None
        results = run_jobs_sharded(jobs, endpoint, build, tmp_path)  # the merge: sends nothing, opens no client
        assert server.stats.requests == 4 and len(results) == 4
    assert [b.requests_per_minute for b in budgets] == [3000, 3000]
    assert "each of the 2 shards (--shard i/2) took 1/2 of it" in results.summary["budget"]
    assert results.summary["resent_after_kill"] == 0
    text = describe_budget(endpoint, processes=4)
    assert "6000 requests/min for the whole run" in text and "4 processes of a machine shared one budget" in text
    unlimited = EndpointConfig(provider="openai-compatible", model="m", base_url="http://127.0.0.1:1/v1")
    assert describe_budget(unlimited) == "none set (no requests- or tokens-per-minute limit)"


def test_the_card_says_how_the_budget_was_shared_and_what_was_resent():
    from vital.cards import _environment

    lineage = {"stage": "rate", "seed": None, "inputs": [], "versions": {}, "config": {}}
    summary = {"budget": "500 requests/min for the whole run", "resent_after_kill": 3, "resent_cost_usd": 0.0123}
    text = _environment().get_template("_lineage.md").render(lineage=lineage, api_run=summary)
    assert "rate budget 500 requests/min for the whole run" in text
    assert "**3 request(s) were resent after a kill**" in text and "$0.0123" in text
    assert "API use" not in _environment().get_template("_lineage.md").render(lineage=lineage)


KILLED = textwrap.dedent(
    """
    import sys
    from vital.llm import ChatRequest, EndpointConfig, run_sync
    config = EndpointConfig(provider="openai-compatible", model="gpt-4o", base_url=sys.argv[1], concurrency=4,
                            prices={"gpt-4o": {"prompt": 2.5, "completion": 10.0}})
    run_sync(config, [ChatRequest([{"role": "user", "content": f"q{i}"}]) for i in range(40)], journal=sys.argv[2],
             progress=False)
    """
)


def journal_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_requests_in_flight_at_a_kill_are_counted_and_costed_exactly_once(tmp_path):
    """SIGKILL a run with four requests in flight; the rerun sends each unfinished request once, journals every key
    exactly once (group commit loses nothing a killed process appended), and counts the resends it paid for."""
    path = tmp_path / "journal.jsonl"
    with StandInServer(latency_ms=300) as server:
        process = subprocess.Popen([sys.executable, "-c", KILLED, server.base_url, str(path)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not path.exists() or len(journal_lines(path)) < 8):
            time.sleep(0.05)
        # Killed while the server holds a request (300 ms each), not in the instant between two waves: under load
        # that instant can be long enough to hit, and a kill with nothing in flight has nothing to count.
        while time.monotonic() < deadline and server.stats.in_flight < 1:
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        finished = {record["key"] for record in journal_lines(path)}
        first_run = Counter(server.stats.prompts)
        config = EndpointConfig(
            provider="openai-compatible", model="gpt-4o", base_url=server.base_url, concurrency=4,
            prices={"gpt-4o": {"prompt": 2.5, "completion": 10.0}},
        )  # fmt: skip
        results, stats = run_sync(
            config,
            [ChatRequest([{"role": "user", "content": f"q{i}"}]) for i in range(40)],
            journal=path,
            progress=False,
        )
        seen = Counter(server.stats.prompts)
    assert all(r.ok for r in results)
    twice = {prompt for prompt, count in seen.items() if count == 2}
    assert max(seen.values()) <= 2 and 1 <= len(twice) <= 4  # at most the concurrency was in flight at the kill
    # Sent twice: exactly what the killed run had sent but not journaled.
    assert twice == {prompt for prompt in first_run if results[int(prompt[1:])].key not in finished}
    keys = [record["key"] for record in journal_lines(path)]
    assert len(keys) == len(set(keys)) == 40  # exactly once
    # Counted: every request the killed run had started sending (a request can die in the client before the server
    # sees it, so the count is an upper bound of what was paid twice, never below it).
    resent = [r for r in results if r.resent_after_kill]
    assert {f"q{i}" for i, r in enumerate(results) if r.resent_after_kill} >= twice
    assert len(twice) <= len(resent) == stats.resent_after_kill <= 4
    assert stats.resent_cost_usd == pytest.approx(sum(r.cost_usd for r in resent)) and stats.resent_cost_usd > 0
    assert f"{len(resent)} resent after a kill" in stats.summary()
    with Journal.open(path) as journal:  # a later run has nothing left to call resent
        assert not journal.interrupted
