"""Outbox: messages written in the state change's transaction, published after commit.

`queue` runs inside the caller's transaction, writes `Pending` rows (messages already
encoded, by `shared.kafka.codec.encode` or a contract's fast writer) in one statement and
returns the rows it wrote (`OutboxRow`: id and payload, still in memory); `add_to_outbox`
does the same for contract models. After commit the caller hands them to
the relay, which produces them at once (low latency), waits for the broker's acks and
only then deletes them by id: no second transaction reading the payloads back. A sweeper
publishes whatever a crash or an outage left behind (rows older than `sweep_after_s`),
claiming them with SKIP LOCKED so that replicas never take the same row in one sweep.
A message can be published twice (crash between ack and delete, or a fast path slower
than the sweep delay), never lost: consumers deduplicate on the message id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, NamedTuple

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer
from pydantic import BaseModel
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    LargeBinary,
    MetaData,
    String,
    Table,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared import metrics
from shared.db.driver import driver
from shared.faults import crash_point
from shared.kafka.codec import encode, headers_json, with_trace
from shared.kafka.producer import send_batched

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


class OutboxRow(NamedTuple):
    """One committed outbox row as its writer has it in memory."""

    id: int
    topic: str
    key: bytes | None
    value: bytes
    headers: str  # JSON [[name, value], ...], as stored in the `headers` column


def written_rows(ids: Sequence[int], topics: Sequence[str], keys: Sequence[bytes | None],
                 values: Sequence[bytes], headers: Sequence[str]) -> list[OutboxRow]:
    """The rows an `INSERT ... SELECT FROM unnest(...) RETURNING id` just wrote, in input
    order. Identity ids are drawn in insertion order, so sorting them pairs each with its
    input (and even if they paired otherwise, a publish sends and deletes the whole set)."""
    return [OutboxRow(i, t, k, v, h)
            for i, t, k, v, h in zip(sorted(ids), topics, keys, values, headers, strict=True)]


class Pending(NamedTuple):
    """One message to queue: its topic's short name (the `schema` header), Kafka key,
    message id (the `message-id` header), encoded value, and the topic's full name where
    rows of several topics go in together (else `queue(..., topic=...)` names it)."""

    short: str
    key: bytes | None
    message_id: str
    value: bytes
    topic: str = ""


@lru_cache(maxsize=32)
def _insert(table: str) -> str:
    # WITH ORDINALITY: identity ids follow the input order, which the relay publishes in.
    return (f"INSERT INTO {table} (topic, key, value, headers) "
            "SELECT t, k, v, h::jsonb FROM unnest($1::text[], $2::bytea[], $3::bytea[], "
            "$4::text[]) WITH ORDINALITY AS u(t, k, v, h, n) ORDER BY n RETURNING id")


async def queue(conn: AsyncConnection | Any, table: Table, rows: Sequence[Pending], *,
                topic: str | None = None) -> list[OutboxRow]:
    """Queue `rows` in order, in the caller's transaction (an `AsyncConnection`, or the
    asyncpg connection under one), in one statement; returns the rows to publish after
    commit. `topic`: every row's topic, whatever their own says. asyncpg directly:
    SQLAlchemy's parameter and result handling would cost more than the statement at
    thousands of messages per second."""
    if not rows:
        return []
    topics = [r.topic for r in rows] if topic is None else [topic] * len(rows)
    keys = [r.key for r in rows]
    values = [r.value for r in rows]
    headers = with_trace([headers_json(r.short, r.message_id) for r in rows])
    raw = await driver(conn) if isinstance(conn, AsyncConnection) else conn
    name = f"{table.schema}.{table.name}" if table.schema else table.name
    got = await raw.fetch(_insert(name), topics, keys, values, headers)
    return written_rows([r[0] for r in got], topics, keys, values, headers)


async def add_to_outbox(
    conn: AsyncConnection,
    table: Table,
    topic: str,
    topic_short: str,
    messages: Sequence[tuple[bytes, BaseModel]],
) -> list[OutboxRow]:
    """Queue (key, message) pairs for `topic`; returns the rows to publish after commit."""
    return await queue(conn, table, [
        Pending(topic_short, key, str(getattr(msg, "id", "")), encode(msg))
        for key, msg in messages], topic=topic)


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
        # The fast path's deletes go over a connection of the relay's own: publishing never
        # waits for the pool (which the handlers hold under load) nor pays a checkout.
        self._conn: Any = None
        self._conn_lock = asyncio.Lock()
        self._acked: list[int] = []  # ids whose delete is waiting for the connection
        name = f'"{table.schema}"."{table.name}"' if table.schema else f'"{table.name}"'
        # asyncpg directly: one statement text each (prepared once per connection), and no
        # SQLAlchemy parameter or result processing on the per-batch path.
        self._delete = f"DELETE FROM {name} WHERE id = ANY($1::bigint[])"
        self._claim = (
            f"DELETE FROM {name} WHERE id IN (SELECT id FROM {name} "
            "WHERE created_at < now() - make_interval(secs => $1) "
            "ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) "
            "RETURNING id, topic, key, value, headers::text")

    async def publish(self, rows: Sequence[OutboxRow]) -> None:
        """Publish these committed rows now, then delete them. Failures are logged: the
        rows stay and the sweeper retries them."""
        if not rows:
            return
        crash_point("after_commit_before_produce")  # test-only (shared/faults.py)
        try:
            await self._produce(rows)
            crash_point("after_produce_before_commit")
            # Only after every ack. Rows a sweeper holds make this wait for its commit
            # (after which they are gone); the sweeper itself never waits (SKIP LOCKED).
            await self._delete_acked([r.id for r in rows])
        except Exception as exc:  # the rows stay; the sweeper gets them
            log.warning("%s outbox: publish deferred to sweeper (%s)", self.service,
                        type(exc).__name__)
            return
        metrics.OUTBOX_PUBLISHED.labels(self.service).inc(len(rows))

    async def sweep_once(self) -> int:
        """Claim old rows by deleting them, publish, and commit only once the broker acked:
        a failed publish rolls the delete back. SKIP LOCKED keeps relays from colliding."""
        async with self.engine.connect() as conn:
            raw = await driver(conn)  # no SQLAlchemy transaction: asyncpg's own below
            async with raw.transaction():
                found = await raw.fetch(self._claim, float(self.sweep_after_s), self.batch)
                rows = sorted((OutboxRow(*r) for r in found), key=lambda r: r.id)
                if not rows:
                    return 0
                await self._produce(rows)
                crash_point("after_produce_before_commit")  # test-only (shared/faults.py)
        metrics.OUTBOX_PUBLISHED.labels(self.service).inc(len(rows))
        return len(rows)

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

    async def close(self) -> None:
        """Close the relay's own connection (the runtime calls this after stop)."""
        async with self._conn_lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await conn.close(timeout=2)

    async def _delete_acked(self, ids: list[int]) -> None:
        """Delete published rows (autocommit). Calls that arrive while a delete is running
        go out together in the next statement. A failure leaves the rows to the sweeper
        (published again, deduplicated by the consumers) and reconnects next time."""
        self._acked += ids
        async with self._conn_lock:
            if not self._acked:
                return  # the call before took ours along
            todo, self._acked = self._acked, []
            try:
                if self._conn is None or self._conn.is_closed():
                    url = self.engine.url.set(drivername="postgresql")
                    self._conn = await asyncpg.connect(url.render_as_string(hide_password=False),
                                                       timeout=3, command_timeout=30)
                await self._conn.execute(self._delete, todo)
            except Exception:
                conn, self._conn = self._conn, None
                if conn is not None:
                    conn.terminate()
                raise

    async def _produce(self, rows: Sequence[OutboxRow]) -> None:
        """Send in row order and wait for every ack (raises if any fails or takes over 10 s).
        `send_batched`: a sweep or a large handler batch goes as one producer batch per
        partition, half the CPU a row of `send()` each; small calls keep `send()` so that
        concurrent ones share a produce request. Partitions are the ones `send()` picks."""
        futures = await send_batched(self.producer, [
            (r.topic, r.key, r.value, [(k, v.encode()) for k, v in orjson.loads(r.headers)])
            for r in rows])
        await asyncio.wait_for(asyncio.gather(*futures), 10)
