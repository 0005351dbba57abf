"""Hands the engine's committed outbox rows to the relay's background publishing.

Handlers and the timer worker hand over the rows they just committed instead of waiting
for the broker's acks themselves (`OutboxRelay.publish_soon`): the consumer moves on to
its next batch while the previous one is being published, and rows from several batches
go out in one round trip. Rows are durable before they are handed over, so nothing depends
on this: if the process dies, the outbox sweeper publishes what is left; on a clean stop
the runtime drains the relay.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.db.outbox import OutboxRelay, OutboxRow


class OutboxPublisher:
    """Built before the runtime; until `relay` is set (when the runtime starts its workers)
    nothing is handed over: rows simply wait for the sweeper."""

    def __init__(self, relay: OutboxRelay | None = None) -> None:
        self.relay = relay

    def publish_soon(self, rows: Sequence[OutboxRow]) -> None:
        if self.relay is not None:
            self.relay.publish_soon(rows)
