"""Rate limits and backoff for the LLM client: per-minute budgets that never burst, and jittered retry delays.

A budget is a token bucket that refills at ``per_minute / 60`` per second and holds at most ``burst``. The request
budget uses ``burst=1``: requests are paced one every ``60 / rpm`` seconds (aiming 2% under the budget, to absorb
network jitter), so no window of any length sees more than its share. The token budget holds one second's worth; a request that needs more
than the bucket holds waits for a full bucket and leaves it in debt, which later requests wait out. Reservations are
made in call order without awaiting, so the limiter needs no lock and belongs to no event loop.

Public API: :class:`RateLimiter`, :func:`estimate_prompt_tokens`, :func:`retry_after_seconds`, :func:`backoff_delay`.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any


# OpenAI bills a high-detail image by 512-px tiles (170 each, plus 85); a 1024x1024 image is 765 tokens.
# Image sizes are unknown before decoding, so that typical figure is the estimate; usage reconciles it afterwards.
IMAGE_TOKENS_ESTIMATE = {"low": 85, "high": 765, "auto": 765}
# A per-message overhead in OpenAI's accounting (role and separators).
_MESSAGE_OVERHEAD_TOKENS = 4


class RateLimiter:
    """A token bucket of ``per_minute`` units a minute holding at most ``burst`` units; ``per_minute <= 0`` is no limit.

    Args:
        per_minute: the budget (requests or tokens per minute).
        burst: the bucket's capacity; it starts full.
        headroom: the fraction of the budget actually used. Requests reach the server a few milliseconds early or
            late; aiming 2% under the budget keeps every window the server measures within it.
        clock: a monotonic clock in seconds (injectable for tests).
    """

    def __init__(
        self,
        per_minute: float,
        burst: float = 1.0,
        headroom: float = 0.98,
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

    def _refill(self) -> float:
        now = self._clock()
        self._level = min(self.burst, self._level + (now - self._updated) * self.rate)
        self._updated = now
        return now

    def reserve(self, amount: float = 1.0) -> float:
        """Take ``amount`` from the budget now; return how many seconds the caller must wait before using it.

        The bucket may go into debt; later reservations queue behind it, in call order.
        """
        if self.unlimited:
            return 0.0
        self._refill()
        need = min(float(amount), self.burst)
        wait = max(0.0, (need - self._level) / self.rate)
        self._level -= float(amount)
        return wait

    def refund(self, amount: float) -> None:
        """Give back ``amount`` (negative: take more), when the real usage differs from what was reserved."""
        if self.unlimited or amount == 0:
            return
        self._refill()
        self._level = min(self.burst, self._level + float(amount))

    async def acquire(self, amount: float = 1.0) -> None:
        """Reserve ``amount`` and sleep until it may be used."""
        wait = self.reserve(amount)
        if wait > 0:
            await asyncio.sleep(wait)


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
