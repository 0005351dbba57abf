"""Delivery events into messaging's outbox, in the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from services.messaging.store.connection import Driver
from services.messaging.tables import outbox
from shared.contracts.delivery import DeliveryEvent
from shared.contracts.envelope import message_key
from shared.db.outbox import Columns, OutboxRow, Pending, columns, queue
from shared.kafka.codec import encode
from shared.settings import Settings


def encoded(e: DeliveryEvent) -> Pending:
    """The outbox row of a delivery event built as a model (its topic set by `emit`)."""
    return Pending("delivery-events", message_key(e.workspace_id, e.profile_id), e.id,
                   encode(e))


async def emit(conn: AsyncConnection | Driver, settings: Settings,
               events: Sequence[DeliveryEvent | Pending]) -> list[OutboxRow]:
    """Delivery events into the outbox, in the caller's transaction, in order."""
    if not events:
        return []
    return await queue(conn, outbox, _pending(events), topic=settings.topic("delivery-events"))


def arrays(settings: Settings, events: Sequence[DeliveryEvent | Pending]) -> Columns:
    """Delivery events as the outbox INSERT part of a larger statement takes them
    (`shared.db.outbox.insert_sql`, on `outbox.fullname`)."""
    return columns(_pending(events), topic=settings.topic("delivery-events"))


def _pending(events: Sequence[DeliveryEvent | Pending]) -> list[Pending]:
    return [e if isinstance(e, Pending) else encoded(e) for e in events]
