"""A background worker's sleep that ends early when work for it arrives.

A polling worker (journey's timers, the broadcast worker) asks Postgres when its next work
is due and sleeps until then, capped, instead of polling every few tens of milliseconds;
code of the same process that commits sooner work calls `Alarms.due(...)`, which ends the
sleep of every worker listening there. Another replica's work is found at the latest
after the cap (its own replica is woken for it at once).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from contextlib import contextmanager


class Alarm:
    """One worker's sleep. `arm()` before looking for work, then `sleep(seconds)`: a `due`
    since `arm()` for earlier than the sleep would end shortens it (also one that came in
    before the sleep began, so work committed while the worker looked is never missed)."""

    def __init__(self) -> None:
        self._due = math.inf  # loop time of the earliest work announced since arm()
        self._until = math.inf  # loop time the current sleep ends
        self._wake: asyncio.Event | None = None

    def arm(self) -> None:
        self._due = math.inf

    def due(self, at: float) -> None:
        """Work is due at loop time `at`."""
        self._due = min(self._due, at)
        if self._wake is not None and at < self._until:
            self._wake.set()

    async def sleep(self, seconds: float, stopping: asyncio.Event) -> None:
        """Sleep `seconds`, less if work is due sooner; returns at once when `stopping`."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        self._wake = asyncio.Event()
        try:
            while not stopping.is_set():
                self._until = min(end, self._due)
                left = self._until - loop.time()
                if left <= 0:
                    return
                self._wake.clear()
                waits = [asyncio.ensure_future(stopping.wait()),
                         asyncio.ensure_future(self._wake.wait())]
                try:
                    await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()
        finally:
            self._wake, self._until = None, math.inf


class Alarms:
    """The alarms of one kind of work in this process; workers register theirs."""

    def __init__(self) -> None:
        self._alarms: set[Alarm] = set()

    def add(self, alarm: Alarm) -> None:
        self._alarms.add(alarm)

    def discard(self, alarm: Alarm) -> None:
        self._alarms.discard(alarm)

    @contextmanager
    def listening(self) -> Iterator[Alarm]:
        """A worker's alarm, registered here for as long as the worker runs."""
        alarm = Alarm()
        self.add(alarm)
        try:
            yield alarm
        finally:
            self.discard(alarm)

    def due(self, in_seconds: float = 0.0) -> None:
        """Work was committed that is due in `in_seconds` (0: now). Call after the commit."""
        if not self._alarms:
            return
        try:
            at = asyncio.get_running_loop().time() + max(in_seconds, 0.0)
        except RuntimeError:
            return  # no loop: no worker of this process can be sleeping
        for alarm in list(self._alarms):
            alarm.due(at)
