"""Rate limits and backoff for the LLM client: per-minute budgets charged at send time, shareable across processes.

A :class:`Budget` holds two token buckets, requests and tokens a minute, that refill at ``per_minute / 60`` a second.
The request bucket holds one request (requests are paced one every ``60 / rpm`` seconds, aiming 2% under the budget
to absorb network jitter); the token bucket holds half a second's worth, so no 10-second window sees more than its
share plus about 3%. A request is charged at the moment it may be sent, never when it is queued: the caller waits
until both buckets can pay, pays, and sends with no await in between. A late wake-up (a loaded machine) therefore
delays the requests behind it instead of letting them bunch up. A request bigger than the token bucket waits for a
full bucket and leaves it in debt, which later requests wait out.

Processes launched together on one machine share one budget by pointing their :class:`Budget` at one file
(``shared_path``): the buckets' state lives there, read and written under an exclusive ``flock`` with the machine's
monotonic clock, so 1, 2 or 8 processes together send what one would. Machines that split a run with ``--shard i/n``
each take ``share = 1/n`` of the budget (see :func:`vital.llm.jobs.run_jobs_sharded`).

Public API: :class:`Budget`, :class:`RateLimiter`, :func:`estimate_prompt_tokens`, :func:`retry_after_seconds`,
:func:`backoff_delay`.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import os
import random
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any


try:
    import fcntl
except ImportError:  # Windows: no shared budgets
    fcntl = None

# OpenAI bills a high-detail image by 512-px tiles (170 each, plus 85); a 1024x1024 image is 765 tokens.
# Image sizes are unknown before decoding, so that typical figure is the estimate; usage reconciles it afterwards.
IMAGE_TOKENS_ESTIMATE = {"low": 85, "high": 765, "auto": 765}
# A per-message overhead in OpenAI's accounting (role and separators).
_MESSAGE_OVERHEAD_TOKENS = 4
# The token bucket holds this many seconds of budget: small enough that a 10-second window stays within 5%.
TOKEN_BURST_S = 0.5
DEFAULT_HEADROOM = 0.98


class RateLimiter:
    """One token bucket of ``per_minute`` units a minute holding at most ``burst`` units; ``per_minute <= 0`` is no
    limit. It is charged only by :meth:`try_take`, when the units are used, so a caller that wakes late never leaves
    budget to those behind it in a burst.

    Args:
        per_minute: the budget (requests or tokens per minute).
        burst: the bucket's capacity; it starts full.
        headroom: the fraction of the budget actually used (see the module docstring).
        clock: a monotonic clock in seconds (injectable for tests).
    """

    def __init__(
        self,
        per_minute: float,
        burst: float = 1.0,
        headroom: float = DEFAULT_HEADROOM,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < headroom <= 1:
            raise ValueError(f"headroom must be in (0, 1], got {headroom}")
        self.per_minute = float(per_minute)
        self.rate = self.per_minute * headroom / 60.0
        self.burst = max(float(burst), 1e-9)
        self._clock = clock
        self._level = self.burst
        self._updated = clock()

    @property
    def unlimited(self) -> bool:
        """True when there is no budget."""
        return self.per_minute <= 0

    def _refill(self) -> None:
        now = self._clock()
        self._level, self._updated = _refilled(self._level, self._updated, now, self.rate, self.burst), now

    def wait_for(self, amount: float = 1.0) -> float:
        """Seconds until ``amount`` could be taken (0 if now); takes nothing."""
        if self.unlimited:
            return 0.0
        self._refill()
        return _wait(self._level, amount, self.rate, self.burst)

    def try_take(self, amount: float = 1.0) -> float:
        """Take ``amount`` if the bucket can pay it now and return 0; else take nothing and return the wait."""
        wait = self.wait_for(amount)
        if wait == 0 and not self.unlimited:
            self._level -= float(amount)
        return wait

    def refund(self, amount: float) -> None:
        """Give back ``amount`` (negative: take more), when the real usage differs from what was charged."""
        if self.unlimited or amount == 0:
            return
        self._refill()
        self._level = min(self.burst, self._level + float(amount))

    async def acquire(self, amount: float = 1.0, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        """Sleep until ``amount`` can be paid, then pay it (charged when this returns, not when it was called)."""
        while (wait := self.try_take(amount)) > 0:
            await sleep(wait)


def _refilled(level: float, updated: float, now: float, rate: float, burst: float) -> float:
    elapsed = now - updated
    if elapsed < 0:  # a clock from before a reboot (a stale shared file): start full
        return burst
    return min(burst, level + elapsed * rate)


def _wait(level: float, amount: float, rate: float, burst: float) -> float:
    need = min(float(amount), burst)
    # A shortfall within rounding error is no shortfall (a wait of 1e-13 s would never let a clock move on).
    return 0.0 if level >= need - 1e-9 * max(1.0, need) else (need - level) / rate


_STATE = struct.Struct("<ddd")  # request level, token level, last update (time.monotonic of this machine)


class Budget:
    """Requests and tokens per minute, charged together at the moment a request is sent.

    Args:
        requests_per_minute, tokens_per_minute: the budgets (0 = unlimited).
        share: the fraction of both budgets this budget may use (``1/n`` for one of ``n`` machines).
        shared_path: a file that every process on this machine sharing the budget names (created if missing);
            ``None`` keeps the budget in this process.
        headroom: the fraction of the budget aimed at (see the module docstring).
        clock: a monotonic clock in seconds, the same in every sharing process (injectable for tests).
    """

    def __init__(
        self,
        requests_per_minute: float = 0,
        tokens_per_minute: float = 0,
        share: float = 1.0,
        shared_path: str | os.PathLike | None = None,
        headroom: float = DEFAULT_HEADROOM,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        if not 0 < headroom <= 1:
            raise ValueError(f"headroom must be in (0, 1], got {headroom}")
        self.requests_per_minute = float(requests_per_minute) * share
        self.tokens_per_minute = float(tokens_per_minute) * share
        self.share = share
        self.request_rate = self.requests_per_minute * headroom / 60.0
        self.token_rate = self.tokens_per_minute * headroom / 60.0
        self.request_burst = 1.0
        self.token_burst = max(1.0, self.tokens_per_minute / 60.0 * TOKEN_BURST_S)
        self._clock = clock
        self.shared_path = Path(shared_path) if shared_path is not None and not self.unlimited else None
        self._fd: int | None = None
        if self.shared_path is not None and fcntl is None:
            raise RuntimeError("a budget shared across processes needs POSIX file locks (fcntl)")
        self._state = (self.request_burst, self.token_burst, clock())
        self.charges = 0  # requests charged by this process

    @property
    def unlimited(self) -> bool:
        """True when neither budget is set."""
        return self.requests_per_minute <= 0 and self.tokens_per_minute <= 0

    def describe(self) -> str:
        """One line for logs and cards: the budget, its share and whether processes share it."""
        parts = []
        if self.requests_per_minute > 0:
            parts.append(f"{self.requests_per_minute:g} requests/min")
        if self.tokens_per_minute > 0:
            parts.append(f"{self.tokens_per_minute:g} tokens/min")
        text = " and ".join(parts) or "no rate limit"
        if self.share < 1:
            text += f" (1/{round(1 / self.share)} of the configured budget: one shard of several)"
        if self.shared_path is not None:
            text += ", shared by every process of this run on this machine"
        return text

    # -- state: in this process, or in a locked file ------------------------------------------------------------------
    def _transact(self, update: Callable[[tuple[float, float, float]], tuple[tuple[float, float, float], float]]):
        if self.shared_path is None:
            self._state, result = update(self._state)
            return result
        if self._fd is None:
            self.shared_path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.shared_path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            raw = os.pread(self._fd, _STATE.size, 0)
            state = _STATE.unpack(raw) if len(raw) == _STATE.size else (self.request_burst, self.token_burst, -1.0)
            if not all(math.isfinite(x) for x in state):
                state = (self.request_burst, self.token_burst, -1.0)
            new_state, result = update(state)
            os.pwrite(self._fd, _STATE.pack(*new_state), 0)
            return result
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _refill(self, state: tuple[float, float, float]) -> tuple[float, float, float]:
        requests, tokens, updated = state
        now = self._clock()
        if updated < 0:
            return self.request_burst, self.token_burst, now
        return (
            _refilled(requests, updated, now, self.request_rate, self.request_burst),
            _refilled(tokens, updated, now, self.token_rate, self.token_burst),
            now,
        )

    def try_acquire(self, tokens: float = 0.0) -> float:
        """Charge one request and ``tokens`` now and return 0 if both buckets can pay; else charge nothing and
        return the seconds to wait before trying again."""
        if self.unlimited:
            self.charges += 1
            return 0.0

        def update(state):
            requests, level, now = self._refill(state)
            wait = 0.0
            if self.request_rate > 0:
                wait = _wait(requests, 1.0, self.request_rate, self.request_burst)
            if self.token_rate > 0 and tokens > 0:
                wait = max(wait, _wait(level, tokens, self.token_rate, self.token_burst))
            if wait == 0:
                requests -= 1.0 if self.request_rate > 0 else 0.0
                level -= float(tokens) if self.token_rate > 0 else 0.0
            return (requests, level, now), wait

        wait = self._transact(update)
        self.charges += wait == 0
        return wait

    def refund(self, tokens: float) -> None:
        """Give back ``tokens`` (negative: charge more), when the real usage differs from the estimate charged."""
        if self.token_rate <= 0 or tokens == 0:
            return

        def update(state):
            requests, level, now = self._refill(state)
            return (requests, min(self.token_burst, level + float(tokens)), now), None

        self._transact(update)

    async def acquire(self, tokens: float = 0.0, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        """Sleep until one request and ``tokens`` can be paid, then pay (the charge happens when this returns)."""
        while (wait := self.try_acquire(tokens)) > 0:
            await sleep(wait)

    def close(self) -> None:
        """Close the shared file (the budget keeps working: it reopens on the next charge)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return math.ceil(len(content) / 4)
    if isinstance(content, list):
        total = 0
        for part in content:
            if not isinstance(part, Mapping):
                continue
            if part.get("type") == "text":
                total += math.ceil(len(str(part.get("text", ""))) / 4)
            elif part.get("type") == "image_url":
                image = part.get("image_url")
                detail = image.get("detail", "auto") if isinstance(image, Mapping) else "auto"
                total += IMAGE_TOKENS_ESTIMATE.get(detail, IMAGE_TOKENS_ESTIMATE["auto"])
        return total
    return 0


def estimate_prompt_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """A pre-call estimate of a chat prompt's tokens: 4 characters a token, plus a typical figure per image."""
    return sum(_content_tokens(message.get("content")) + _MESSAGE_OVERHEAD_TOKENS for message in messages)


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The wait a server asked for in ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date), if any."""
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            seconds = float(value) / 1000
            if math.isfinite(seconds) and seconds >= 0:
                return seconds
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform in ``[0, min(max_s, base_s * 2**attempt)]`` (attempt from 0)."""
    cap = min(max_s, base_s * (2 ** min(attempt, 62)))
    return (rng or random).uniform(0.0, cap)
