"""Delivery events into messaging's outbox, in the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from services.messaging.delivery_events import encoded
from services.messaging.store.connection import Driver
from services.messaging.tables import outbox
from shared.contracts.delivery import DeliveryEvent
from shared.db.outbox import OutboxRow, Pending, queue
from shared.settings import Settings


async def emit(conn: AsyncConnection | Driver, settings: Settings,
               events: Sequence[DeliveryEvent | Pending]) -> list[OutboxRow]:
    """Delivery events into the outbox, in the caller's transaction, in order."""
    if not events:
        return []
    return await queue(conn, outbox, [e if isinstance(e, Pending) else encoded(e) for e in events],
                       topic=settings.topic("delivery-events"))
