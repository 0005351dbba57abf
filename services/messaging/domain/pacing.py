"""Retry backoff and per-provider rate limits, with the clock injected."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_delay(attempt: int, *, base: float = 0.2, cap: float = 10.0,
                  retry_after: float | None = None,
                  rand: Callable[[float, float], float] = random.uniform) -> float:
    """Exponential backoff with full jitter after failed `attempt` (1-based); a provider's
    Retry-After wins when it asks for longer (capped, so one send can't stall a batch)."""
    jittered = rand(0, min(cap, base * 2 ** attempt))
    if retry_after is not None:
        return min(cap, max(jittered, retry_after))
    return jittered


def retry_delay(tries: int, *, base: float, cap: float, retry_after: float | None = None,
                rand: Callable[[float, float], float] = random.uniform) -> float:
    """Seconds until the next durable retry after `tries` failed rounds (1-based):
    `base` doubling up to `cap`, +-20 % jitter so a recovered provider is not hit by every
    deferred message at once; a provider's Retry-After wins when it asks for longer."""
    delay = min(cap, base * 2 ** max(0, tries - 1)) * rand(0.8, 1.2)
    return float(max(delay, retry_after or 0.0))


class TokenBucket:
    """`rate` sends per second with bursts of up to `burst`; `reserve` says how long to wait."""

    def __init__(self, rate: float, burst: float | None = None, *,
                 clock: Callable[[], float]) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate, self.capacity, self.clock = rate, burst or max(1.0, rate), clock
        self.tokens, self.stamp = self.capacity, clock()

    def reserve(self) -> float:
        """Take one token; return the seconds to wait before using it (0 when available)."""
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate
