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
from collections.abc import Sequence

from shared.db.outbox import OutboxRelay, OutboxRow

log = logging.getLogger(__name__)


class OutboxPublisher:
    """Until `relay` is set (when the runtime starts its workers) nothing is queued: rows
    simply wait for the sweeper."""

    def __init__(self, relay: OutboxRelay | None = None) -> None:
        self.relay = relay
        self._queue: asyncio.Queue[list[OutboxRow]] = asyncio.Queue()
        self._stopping = asyncio.Event()

    def publish_soon(self, ids: Sequence[OutboxRow]) -> None:
        if ids and self.relay is not None:
            self._queue.put_nowait(list(ids))

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        assert self.relay is not None
        while not (self._stopping.is_set() and self._queue.empty()):
            try:
                ids = await asyncio.wait_for(self._queue.get(), 0.2)
            except TimeoutError:
                continue
            while not self._queue.empty() and len(ids) < self.relay.batch:
                ids += self._queue.get_nowait()
            await self.relay.publish(ids)  # logs and leaves rows to the sweeper on failure
