"""Retention: delete rows past their window in bounded chunks, on an interval.

Each chunk is its own short transaction that deletes at most `CHUNK` rows, so a pass never
holds long locks nor runs one table-wide DELETE, and the hot path's inserts go on beside
it. A pass that fails is logged and retried at the next interval: nothing depends on rows
being gone on time, only on the table staying bounded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Table, text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.clock import pause

log = logging.getLogger(__name__)

CHUNK = 5000
# What a pass runs: given the engine and "now", delete what is old; returns rows deleted.
Prune = Callable[[AsyncEngine, datetime], Awaitable[int]]


async def delete_in_chunks(engine: AsyncEngine, sql: str, params: dict[str, object],
                           chunk: int = CHUNK) -> int:
    """Run `sql` (a DELETE of at most :chunk rows) in its own transaction until a run
    deletes fewer than `chunk` rows; returns the total."""
    total = 0
    while True:
        async with engine.begin() as conn:
            deleted = (await conn.execute(text(sql), {**params, "chunk": chunk})).rowcount
        total += deleted
        if deleted < chunk:
            return total
        await asyncio.sleep(0)  # let the service's own work in between chunks


async def prune_inbox(engine: AsyncEngine, inbox: Table, now: datetime, keep: timedelta,
                      chunk: int = CHUNK) -> int:
    """Forget inbox ids applied before `now - keep`. `keep` must exceed how long a message
    can still be redelivered (the topic's retention): a redelivery after its id is gone
    would be applied a second time where the inbox is the only dedupe."""
    name = f"{inbox.schema}.{inbox.name}"
    # ctid: the rows' physical address, so the DELETE finds the chunk without a second
    # index lookup; the BRIN index on processed_at finds old rows at almost no write cost.
    return await delete_in_chunks(engine, f"""
        DELETE FROM {name} WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM {name} WHERE processed_at < :cutoff
             LIMIT :chunk FOR UPDATE SKIP LOCKED))""", {"cutoff": now - keep}, chunk)


def inbox_prune(inbox: Table, keep: timedelta) -> Prune:
    async def prune(engine: AsyncEngine, now: datetime) -> int:
        return await prune_inbox(engine, inbox, now, keep)
    return prune


class RetentionWorker:
    """Every `interval_s` (first pass soon after start): run each prune in turn."""

    def __init__(self, engine: AsyncEngine, prunes: dict[str, Prune], interval_s: float,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.engine, self.prunes, self.interval_s, self.now = engine, prunes, interval_s, now
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run_once(self) -> dict[str, int]:
        done: dict[str, int] = {}
        for name, prune in self.prunes.items():
            if self._stopping.is_set():
                break
            try:
                done[name] = await prune(self.engine, self.now())
            except Exception as exc:
                log.warning("retention %s failed (%s); next pass in %.0f s", name,
                            type(exc).__name__, self.interval_s)
            else:
                if done[name]:
                    log.info("retention %s: %d rows deleted", name, done[name])
        return done

    async def run(self) -> None:
        while not self._stopping.is_set():
            await self.run_once()
            await pause(self._stopping, self.interval_s)
