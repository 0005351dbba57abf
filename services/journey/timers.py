"""The timer worker: fires due instance timers, shared by replicas through SKIP LOCKED.

Claiming a due instance locks its row; firing it (moving the instance, writing decisions
and outbox rows) commits in the same transaction. A crash before commit releases the
lock and the timer fires later; after commit `wake_at` has moved, so it never fires twice.

Between claims the worker sleeps until the earliest timer (at least `idle_s`, at most
`max_idle_s`), woken earlier when this process commits a sooner one (services/journey/
wakeups.py): an idle journey service claims about once a second, not twenty times.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select, update

from services.journey import metrics, store, wakeups
from services.journey.policy.directory import Directory, zones
from services.journey.polling import PollingWorker
from services.journey.publisher import OutboxPublisher
from services.journey.store import Documents
from services.journey.tables import instances, outbox
from services.journey.unit import Unit
from shared.clock import Clock
from shared.kafka import is_transient
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)


class TimerWorker(PollingWorker):
    alarms, name = wakeups.TIMERS, "timer worker"
    MAX_IDLE_S = 1.0  # the longest sleep after a claim that found nothing

    def __init__(self, rt: ServiceRuntime, clock: Clock, docs: Documents,
                 publisher: OutboxPublisher | None = None, *, batch: int = 500,
                 idle_s: float = 0.05, max_idle_s: float | None = None,
                 directory: Directory | None = None) -> None:
        self.rt, self.clock, self.docs, self.publisher = rt, clock, docs, publisher
        self.batch, self.idle_s = batch, idle_s
        self.max_idle_s = self.MAX_IDLE_S if max_idle_s is None else max_idle_s
        self.directory = directory  # the workspaces' zones (None: UTC)
        super().__init__()
        self.fired = 0
        # When the last claim found nothing: the earliest timer then (None: no timer).
        self.next_wake: datetime | None = None

    async def step(self) -> float | None:
        claimed = await self.fire_due()
        return self._idle_for(claimed) if claimed < self.batch else None

    async def failed(self, exc: Exception) -> bool:
        log.exception("timer worker: batch failed; retrying one by one")
        await self._fire_singly()
        return True

    def _idle_for(self, claimed: int) -> float:
        """After a partial claim `idle_s` (timers are flowing: let them batch up); after
        an empty one until the earliest timer, within [idle_s, max_idle_s]. The cap is
        how late a timer another replica wrote (and does not fire itself) can be found."""
        if claimed or self.next_wake is None:
            return self.idle_s if claimed else self.max_idle_s
        until = (self.next_wake - self.clock.now()).total_seconds()
        return min(max(until, self.idle_s), self.max_idle_s)

    async def fire_due(self, limit: int | None = None) -> int:
        """Fire up to `limit` due timers in one transaction; returns how many."""
        async with self.rt.engine.begin() as conn:
            unit = Unit(conn, self.docs, self.rt.settings, outbox, self.clock.now())
            due = await unit.load_due(limit or self.batch)
            if not due:
                self.next_wake = await store.next_wake(conn)
                return 0
            unit.zones = await zones(self.directory, {i.workspace_id for i in due})
            for inst in due:
                if inst.wake_at is not None:
                    metrics.TIMER_LATENESS.observe(max(0.0, (unit.now - inst.wake_at)
                                                       .total_seconds()))
                unit.fire(inst)
            ids = await unit.flush()
        if self.publisher is not None:
            self.publisher.publish_soon(ids)
        self.fired += len(due)
        metrics.TIMERS_FIRED.inc(len(due))
        return len(due)

    async def _fire_singly(self) -> None:
        """Isolate a timer that cannot fire (a bug, not an outage): park it an hour later
        with the error recorded, so it never blocks the others."""
        while not self._stopping.is_set():
            try:
                if await self.fire_due(limit=1) == 0:
                    return
            except Exception as exc:
                if is_transient(exc):
                    return
                await self._park_one(exc)

    async def _park_one(self, exc: Exception) -> None:
        now = self.clock.now()
        async with self.rt.engine.begin() as conn:
            row = (await conn.execute(select(instances.c.id).where(
                instances.c.wake_at <= now, instances.c.status == "active")
                .order_by(instances.c.wake_at).limit(1).with_for_update(skip_locked=True))).first()
            if row is not None:
                log.error("timer worker: parking instance %s (%s)", row.id, type(exc).__name__)
                await conn.execute(update(instances).where(instances.c.id == row.id).values(
                    wake_at=now + timedelta(hours=1),
                    exit_reason=f"timer failed: {type(exc).__name__}"[:200]))
