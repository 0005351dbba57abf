"""Outbox: messages written in the state change's transaction, published after commit.

`add_to_outbox` runs inside the caller's transaction. After commit the caller asks
the relay to publish those rows at once (low latency); a sweeper publishes whatever
a crash or an outage left behind. A row's delete commits only after the broker acked
it, so a message can be published twice (crash between ack and commit), never lost:
consumers deduplicate on the message id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import orjson
from aiokafka import AIOKafkaProducer
from pydantic import BaseModel
from sqlalchemy import (
    ARRAY,
    BigInteger,
    Column,
    DateTime,
    Identity,
    LargeBinary,
    MetaData,
    String,
    Table,
    any_,
    delete,
    func,
    literal,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared import metrics
from shared.db.bulk import insert_unnest
from shared.kafka.codec import encode, headers_for

log = logging.getLogger(__name__)


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        Column("id", BigInteger, Identity(), primary_key=True),
        Column("topic", String(250), nullable=False),
        Column("key", LargeBinary, nullable=True),
        Column("value", LargeBinary, nullable=False),
        Column("headers", JSONB, nullable=False),
        Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    )


async def add_to_outbox(
    conn: AsyncConnection,
    table: Table,
    topic: str,
    topic_short: str,
    messages: Sequence[tuple[bytes, BaseModel]],
) -> list[int]:
    """Queue (key, message) pairs for `topic`; returns the row ids to publish after commit."""
    if not messages:
        return []
    rows = [
        {
            "topic": topic,
            "key": key,
            "value": encode(msg),
            "headers": orjson.dumps([[k, v.decode()] for k, v in headers_for(msg, topic_short)]
                                    ).decode(),
        }
        for key, msg in messages
    ]
    result = await insert_unnest(conn, table, _OUTBOX_TYPES, rows, "RETURNING id")
    return list(result.scalars())


_OUTBOX_TYPES = {"topic": "text", "key": "bytea", "value": "bytea", "headers": "jsonb"}


class OutboxRelay:
    """Publishes outbox rows; one per service process."""

    def __init__(self, engine: AsyncEngine, table: Table, producer: AIOKafkaProducer,
                 *, service: str, sweep_after_s: float = 2.0, batch: int = 1000) -> None:
        self.engine = engine
        self.table = table
        self.producer = producer
        self.service = service
        self.sweep_after_s = sweep_after_s
        self.batch = batch
        self._stopping = asyncio.Event()

    async def publish(self, ids: Sequence[int]) -> None:
        """Publish these rows now. Failures are logged: the sweeper retries them."""
        if not ids:
            return
        try:
            # `= ANY(array)`: one statement text whatever the count, so SQLAlchemy's compiled
            # cache and asyncpg's prepared statements are hit (`IN (...)` re-renders per call
            # and is re-prepared for every new length).
            await self._publish_where(self.table.c.id == any_(literal(list(ids),
                                                                      ARRAY(BigInteger))))
        except Exception as exc:  # the rows stay; the sweeper gets them
            log.warning("%s outbox: publish deferred to sweeper (%s)", self.service,
                        type(exc).__name__)

    async def sweep_once(self) -> int:
        cutoff = func.now() - text(f"interval '{float(self.sweep_after_s)} seconds'")
        return await self._publish_where(self.table.c.created_at < cutoff)

    async def run_sweeper(self, interval_s: float = 1.0) -> None:
        while not self._stopping.is_set():
            try:
                while await self.sweep_once() >= self.batch:
                    pass
            except Exception as exc:
                log.warning("%s outbox sweeper: %s", self.service, type(exc).__name__)
            try:
                await asyncio.wait_for(self._stopping.wait(), interval_s)
            except TimeoutError:
                pass

    def stop(self) -> None:
        self._stopping.set()

    async def _publish_where(self, condition: object) -> int:
        """Claim rows by deleting them, publish, and commit only once the broker acked:
        a failed publish rolls the delete back. SKIP LOCKED keeps relays from colliding."""
        t = self.table
        claimed = (select(t.c.id).where(condition)  # type: ignore[arg-type]
                   .order_by(t.c.id).limit(self.batch).with_for_update(skip_locked=True))
        async with self.engine.begin() as conn:
            rows = sorted((await conn.execute(
                delete(t).where(t.c.id.in_(claimed.scalar_subquery()))
                .returning(t.c.id, t.c.topic, t.c.key, t.c.value, t.c.headers)
            )).all(), key=lambda r: r.id)
            if not rows:
                return 0
            futures = [
                await self.producer.send(
                    r.topic, r.value, key=r.key, headers=[(k, v.encode()) for k, v in r.headers]
                )
                for r in rows
            ]
            await asyncio.wait_for(asyncio.gather(*futures), 10)
        metrics.OUTBOX_PUBLISHED.labels(self.service).inc(len(rows))
        return len(rows)
