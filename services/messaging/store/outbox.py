"""Delivery events into messaging's outbox, in the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy.ext.asyncio import AsyncConnection

from services.messaging.store.connection import Driver
from services.messaging.tables import outbox
from shared.contracts.delivery import DeliveryEvent
from shared.contracts.envelope import message_key
from shared.db.outbox import OutboxRow, Pending, queue, written_rows
from shared.kafka.codec import encode, headers_json, with_trace
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
    return await queue(conn, outbox, [e if isinstance(e, Pending) else encoded(e) for e in events],
                       topic=settings.topic("delivery-events"))


class Arrays(NamedTuple):
    """Delivery events as the outbox INSERT of `insert_cte` takes them: one array per column."""

    topics: list[str]
    keys: list[bytes | None]
    values: list[bytes]
    headers: list[str]

    def written(self, ids: Sequence[int], keep: Sequence[int] | None = None) -> list[OutboxRow]:
        """The rows written, given the ids returned (`keep`: the indexes inserted)."""
        if keep is None:
            return written_rows(ids, *self)
        return written_rows(ids, [self.topics[n] for n in keep], [self.keys[n] for n in keep],
                            [self.values[n] for n in keep], [self.headers[n] for n in keep])


def arrays(settings: Settings, events: Sequence[DeliveryEvent | Pending]) -> Arrays:
    pending = [e if isinstance(e, Pending) else encoded(e) for e in events]
    return Arrays([settings.topic("delivery-events")] * len(pending), [p.key for p in pending],
                  [p.value for p in pending],
                  with_trace([headers_json(p.short, p.message_id) for p in pending]))


def insert_cte(first: int, *, only_of: str | None = None) -> str:
    """The outbox INSERT `emit` sends, as a part of a larger statement: `Arrays` in
    $first..$first+3, in order, returning the ids. `only_of`: a CTE returning message ids;
    then $first+4 holds each event's message id, and only those of its messages go in."""
    if only_of is None:
        extra, names, where = "", "t, k, v, h, n", ""
    else:
        extra, names = f", ${first + 4}::text[]", "t, k, v, h, m, n"
        where = f" WHERE m IN (SELECT id FROM {only_of})"
    return (f"INSERT INTO {outbox.fullname} (topic, key, value, headers) "
            f"SELECT t, k, v, h::jsonb FROM unnest(${first}::text[], ${first + 1}::bytea[], "
            f"${first + 2}::bytea[], ${first + 3}::text[]{extra}) WITH ORDINALITY AS u({names})"
            f"{where} ORDER BY n RETURNING id")
