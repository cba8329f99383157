"""Rate budgets: charged when a request is sent (not when it is queued), on a controllable clock so that load on the
test machine cannot change the outcome; and one budget shared by the processes of a run."""

from __future__ import annotations

import asyncio
import heapq
import itertools

import pytest

from vital.llm import AsyncLLMClient, ChatRequest, EndpointConfig
from vital.llm.limits import Budget, RateLimiter
from vital.testing.standin import StandInServer


class VirtualTime:
    """A clock that moves only when every coroutine sleeps: it jumps to the earliest wake-up. ``late`` maps a
    sleeper's name to extra seconds it oversleeps (a loaded machine waking a task late)."""

    def __init__(self, late: dict[str, float] | None = None) -> None:
        self.now = 0.0
        self.late = dict(late or {})
        self._sleepers: list = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    def sleeper(self, name: str):
        async def sleep(delay: float) -> None:
            future = asyncio.get_running_loop().create_future()
            wake = self.now + delay + self.late.pop(name, 0.0)
            heapq.heappush(self._sleepers, (wake, next(self._seq), future))
            await future

        return sleep

    async def run(self, *coroutines):
        tasks = [asyncio.ensure_future(c) for c in coroutines]
        while not all(task.done() for task in tasks):
            for _ in range(5):
                await asyncio.sleep(0)
            if self._sleepers:
                wake, _, future = heapq.heappop(self._sleepers)
                self.now = max(self.now, wake)
                future.set_result(None)
        return [task.result() for task in tasks]


def max_in_window(times: list[float], window: float) -> int:
    times, best, start = sorted(times), 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window + 1e-9:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_rate_limiter_takes_only_what_it_can_pay_and_reconciles():
    now = [0.0]
    tokens = RateLimiter(6000, burst=100, headroom=1.0, clock=lambda: now[0])  # 100 a second, 100 at most banked
    assert tokens.try_take(250) == 0.0  # bigger than the bucket: taken from a full bucket, leaving a debt of 150
    assert tokens.try_take(50) == pytest.approx(2.0)  # the debt and its own 50; nothing taken
    assert tokens.try_take(50) == pytest.approx(2.0)  # still nothing taken: asking again costs nothing
    now[0] = 2.0
    assert tokens.try_take(50) == 0.0
    tokens.refund(1000)
    assert tokens.wait_for(100) == 0.0 and tokens._level == pytest.approx(100)  # never above the burst
    assert RateLimiter(0).try_take(10**9) == 0.0  # 0 = unlimited


def test_a_late_wake_up_delays_the_requests_behind_it_instead_of_bunching_them():
    """Three requests queue at once on a one-a-second budget; the second wakes 0.7 s late (a loaded machine).
    Charged at send time, the third still leaves a full second after the second. (Reserving at queue time, as
    before, sent the third at t=2.0, 0.3 s after the late second: two requests inside one second.)"""
    time_ = VirtualTime(late={"b": 0.7})
    budget = Budget(requests_per_minute=60, headroom=1.0, clock=time_.clock)
    sent: dict[str, float] = {}

    async def main() -> None:
        line = asyncio.Lock()  # the client's requests wait in line, as here

        async def request(name: str) -> None:
            async with line:
                await budget.acquire(0, sleep=time_.sleeper(name))
                sent[name] = time_.now

        await time_.run(request("a"), request("b"), request("c"))

    asyncio.run(main())
    assert sent == pytest.approx({"a": 0.0, "b": 1.7, "c": 2.7})


def test_token_budget_over_any_window_within_five_percent():
    """Requests of 1,000 tokens against 60,000 a minute, eight at a time, on virtual time: no 10-second window
    holds more than 5% over its share, and the budget is used (not left idle)."""
    time_ = VirtualTime()
    budget = Budget(tokens_per_minute=60_000, clock=time_.clock)
    charges: list[float] = []

    async def worker(name: str) -> None:
        for _ in range(40):
            await budget.acquire(1000, sleep=time_.sleeper(name))
            charges.append(time_.now)

    asyncio.run(time_.run(*(worker(f"w{i}") for i in range(8))))
    assert len(charges) == 320
    most = max_in_window(charges, 10.0) * 1000
    assert most <= 60_000 / 6 * 1.05, most
    span = charges[-1] - charges[0]
    assert 319 * 1000 / span >= 1000 * 0.95  # tokens a second, against 1,000 a second budgeted


def test_client_charges_the_token_budget_when_each_request_is_sent():
    """The client's own path (cooldown, budget, send), on a fake clock that moves only when the client waits for
    the budget, and oversleeps once by 0.3 s: every pair of sends is at least one request's worth of budget apart."""
    now = [0.0]
    charges: list[float] = []

    class Recording(Budget):
        def try_acquire(self, tokens: float = 0.0) -> float:
            wait = super().try_acquire(tokens)
            if wait == 0:
                charges.append(now[0])
            return wait

    late = [0.3]

    async def fake_sleep(delay: float) -> None:
        now[0] += delay + (late.pop() if late else 0.0)
        await asyncio.sleep(0)

    with StandInServer() as server:
        config = EndpointConfig(
            provider="openai-compatible", model="gpt-4o", base_url=server.base_url, max_tokens=1000, concurrency=8
        )
        # 120,000 a minute is 2,000 a second; each request is charged ~1,005 tokens (prompt estimate + max_tokens).
        budget = Recording(tokens_per_minute=120_000, headroom=1.0, clock=lambda: now[0])

        async def main():
            async with AsyncLLMClient(config, budget=budget) as client:
                client._sleep = fake_sleep
                return await client.run(
                    [ChatRequest([{"role": "user", "content": f"q{i}"}]) for i in range(6)], progress=False
                )

        results = asyncio.run(main())
    assert all(r.ok for r in results) and len(charges) == 6
    # The bucket holds half a second (1,000 tokens): the first goes at once, then one every ~0.5 s of budget.
    gaps = [b - a for a, b in zip(charges, charges[1:])]
    assert all(gap >= 1005 / 2000 - 1e-6 for gap in gaps[1:]), gaps
    assert charges[-1] - charges[0] >= 4 * 1005 / 2000 + 0.3 - 1e-6


def test_one_budget_file_is_shared_by_every_budget_that_names_it(tmp_path):
    """Two budgets (as two processes would) on one file and one clock pay from one bucket."""
    now = [100.0]
    path = tmp_path / "budget"
    first = Budget(requests_per_minute=60, headroom=1.0, shared_path=path, clock=lambda: now[0])
    second = Budget(requests_per_minute=60, headroom=1.0, shared_path=path, clock=lambda: now[0])
    assert first.try_acquire() == 0.0
    assert second.try_acquire() == pytest.approx(1.0)  # the first took the only request this second
    now[0] += 1.0
    assert second.try_acquire() == 0.0
    assert first.try_acquire() == pytest.approx(1.0)
    alone = Budget(requests_per_minute=60, headroom=1.0, shared_path=tmp_path / "other", clock=lambda: now[0])
    assert alone.try_acquire() == 0.0  # another file is another budget
    for budget in (first, second, alone):
        budget.close()


def test_a_shard_takes_its_share_of_the_budget():
    budget = Budget(requests_per_minute=600, tokens_per_minute=400_000, share=1 / 4)
    assert budget.requests_per_minute == 150 and budget.tokens_per_minute == 100_000
    assert "1/4 of the configured budget" in budget.describe()
    with pytest.raises(ValueError):
        Budget(requests_per_minute=60, share=0)
