"""The loop journey's polling workers share (the timer worker, the broadcast worker).

Each pass claims due work (`step`), then sleeps for as long as `step` says, woken early by
the worker's alarms (services/journey/wakeups.py) when this process commits sooner work.
While Postgres or Kafka is down the loop backs off from 0.2 s, doubling up to 15 s.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from shared.alarm import Alarms
from shared.clock import pause
from shared.kafka import is_transient
from shared.runtime import Stoppable

log = logging.getLogger(__name__)
FIRST_DELAY_S, MAX_DELAY_S = 0.2, 15.0  # the backoff while a dependency is down


class PollingWorker(Stoppable):
    alarms: ClassVar[Alarms]  # what announces this worker's work
    name: ClassVar[str]  # for the log lines

    async def step(self) -> float | None:
        """One pass over due work; returns how long to sleep (None: go again at once)."""
        raise NotImplementedError

    async def failed(self, exc: Exception) -> bool:
        """`step` raised a non-transient error (a bug, not an outage). True: it was dealt
        with, go again at once; False (here, after logging it): back off."""
        log.exception("%s: pass failed", self.name)
        return False

    async def run(self) -> None:
        with self.alarms.listening() as alarm:
            delay = FIRST_DELAY_S
            while not self._stopping.is_set():
                alarm.arm()  # work committed from here on wakes the sleep below
                try:
                    idle_for = await self.step()
                    delay = FIRST_DELAY_S
                except Exception as exc:
                    if is_transient(exc):
                        log.warning("%s: dependency down (%s), pausing", self.name,
                                    type(exc).__name__)
                    elif await self.failed(exc):
                        continue
                    await pause(self._stopping, delay)
                    delay = min(delay * 2, MAX_DELAY_S)
                    continue
                if idle_for is not None:
                    await alarm.sleep(idle_for, self._stopping)
