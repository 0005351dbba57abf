"""A consumer's fetch wait that lengthens when idle (see FetchWait)."""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer

from shared.settings import Settings


class FetchWait:
    """The fetch wait: short while records flow, longer once the consumer has been idle.

    Tansu holds every fetch for the whole wait, records or not (docs/performance.md), so
    an idle consumer costs the broker and itself one fetch per wait: at 20 ms, 50 a second
    per consumer. After `IDLE_AFTER_S` without records the wait becomes
    `consumer_fetch_idle_wait_ms`; the first poll with records sets it back, so only the
    first records after a quiet spell wait longer (up to the idle wait per hop).
    """

    IDLE_AFTER_S = 2.0

    def __init__(self, consumer: AIOKafkaConsumer, settings: Settings) -> None:
        self.busy_ms = settings.consumer_fetch_max_wait_ms
        self.idle_ms = settings.consumer_fetch_idle_wait_ms
        # aiokafka reads the wait from its fetcher for each request it builds; no public
        # setter. Without that attribute (another aiokafka) the wait simply stays fixed.
        self._fetcher = getattr(consumer, "_fetcher", None)
        self.enabled = self.idle_ms > self.busy_ms and hasattr(self._fetcher,
                                                               "_fetch_max_wait_ms")
        self.idle = False
        self._last = time.monotonic()

    def polled(self, records: bool) -> None:
        if not self.enabled:
            return
        if records:
            self._last = time.monotonic()
            if self.idle:
                self._set(self.busy_ms)
        elif not self.idle and time.monotonic() - self._last > self.IDLE_AFTER_S:
            self._set(self.idle_ms)

    def _set(self, ms: int) -> None:
        self.idle = ms == self.idle_ms
        self._fetcher._fetch_max_wait_ms = ms  # type: ignore[union-attr]
