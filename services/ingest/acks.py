"""Record acknowledged claims in the background, and purge what is past the window.

A request's claim token goes into `acked_claims` once the broker acked its events
(services/ingest/dedupe.py explains why). One statement per flush serves every request
of the last 20 ms, so confirming costs the request nothing.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

log = logging.getLogger(__name__)

MAX_PENDING = 200_000  # beyond this (a long Postgres outage) the oldest tokens are dropped

_CONFIRM = """
INSERT INTO ingest.acked_claims (claim) SELECT unnest($1::uuid[]) ON CONFLICT DO NOTHING
"""
# Chunked, and SKIP LOCKED so replicas purging at the same time do not queue on each other.
_PURGE = """
DELETE FROM ingest.{table} WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM ingest.{table} WHERE {column} < now() - make_interval(hours => $1)
     LIMIT 5000 FOR UPDATE SKIP LOCKED))
"""
PURGE_EVERY_S = 60.0


class AckWriter:
    def __init__(self, pool: Any, *, window_hours: int, flush_interval_s: float) -> None:
        self.pool = pool
        self.window_hours, self.flush_interval_s = window_hours, flush_interval_s
        self._tokens: list[uuid.UUID] = []
        self._pending: set[uuid.UUID] = set()  # = set(self._tokens), for lookups
        self._wake = asyncio.Event()  # 1000 tokens wait: write them now
        self._first = asyncio.Event()  # the first token after an idle spell
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ingest-acks")

    def add(self, token: uuid.UUID) -> None:
        self._tokens.append(token)
        self._pending.add(token)
        if len(self._tokens) == 1:
            self._first.set()
        if len(self._tokens) >= 1000:
            self._wake.set()

    @property
    def unwritten(self) -> int:
        return len(self._pending)

    def pending(self, token: uuid.UUID) -> bool:
        """Acked by this process but not written yet: counts as acked."""
        return token in self._pending

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_purge = loop.time()
        while not self._stopping:
            if not self._tokens:
                # Idle: sleep until the first token (or the next purge), not every 20 ms.
                self._first.clear()
                try:
                    await asyncio.wait_for(self._first.wait(), max(next_purge - loop.time(), 0))
                except TimeoutError:
                    pass
            if self._tokens and not self._stopping:
                # Gather the tokens of the next 20 ms (or 1000 of them) into one statement.
                try:
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
                except TimeoutError:
                    pass
            self._wake.clear()
            if not await self.flush():
                await asyncio.sleep(0.5)  # Postgres is away: do not spin
            if loop.time() >= next_purge:
                next_purge = loop.time() + PURGE_EVERY_S
                await self._purge()

    async def flush(self) -> bool:
        if not self._tokens:
            return True
        tokens, self._tokens = self._tokens, []
        try:
            async with self.pool.acquire() as conn:
                await conn.execute(_CONFIRM, tokens)
            self._pending.difference_update(tokens)
            return True
        except Exception as exc:
            # Keep them for the next flush. If Postgres stays away long enough to pile up
            # too many, drop the oldest: those claims become re-claimable after the lease,
            # which can mean a duplicate downstream (deduplicated by id), never a loss.
            self._tokens = (tokens + self._tokens)[-MAX_PENDING:]
            self._pending = set(self._tokens)
            log.warning("could not record %d acknowledged claims (%s); will retry",
                        len(tokens), type(exc).__name__)
            return False

    async def _purge(self) -> None:
        try:
            async with self.pool.acquire() as conn:
                for table, column, hours in (("message_ids", "claimed_at", self.window_hours),
                                             ("acked_claims", "acked_at", self.window_hours + 1)):
                    while (await conn.execute(_PURGE.format(table=table, column=column),
                                              hours)) == "DELETE 5000":
                        pass
        except Exception as exc:
            log.warning("dedupe purge failed (%s); will retry", type(exc).__name__)

    async def close(self, timeout: float) -> None:
        self._stopping = True
        self._wake.set()
        self._first.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except TimeoutError:
            pass
        if self._tokens:
            log.warning("shutdown: %d acknowledged claims not recorded", len(self._tokens))
