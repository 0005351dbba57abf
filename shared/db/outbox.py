"""Outbox: messages written in the state change's transaction, published after commit.

`queue` runs inside the caller's transaction, writes `Pending` rows (messages already
encoded, by `shared.kafka.codec.encode` or a contract's fast writer) in one statement and
returns the rows it wrote (`OutboxRow`: id and payload, still in memory); `add_to_outbox`
does the same for contract models. After commit the caller hands them to
the relay, which produces them at once (low latency), waits for the broker's acks and
only then deletes them by id: no second transaction reading the payloads back. The deletes
of every publish within `delete_after_s` (0.1 s) go out as one statement, off the caller's
path: a handler's poll no longer waits for it, and Postgres commits one delete per tenth of
a second instead of one per publish. Handlers that need not wait for the acks hand the
rows to `publish_soon` instead (in the background, in order; `drain` waits for what it
holds). A sweeper
publishes whatever a crash or an outage left behind (rows older than `sweep_after_s`),
claiming them with SKIP LOCKED so that replicas never take the same row in one sweep.
A message can be published twice (crash between ack and delete, or a fast path slower
than the sweep delay), never lost: consumers deduplicate on the message id.
"""

from __future__ import annotations

import asyncio
import logging
import time
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
from shared.clock import pause
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


class Columns(NamedTuple):
    """Outbox rows as one array per column: the parameters `insert_sql` takes, in order."""

    topics: list[str]
    keys: list[bytes | None]
    values: list[bytes]
    headers: list[str]

    def written(self, ids: Sequence[int], keep: Sequence[int] | None = None
                ) -> list[OutboxRow]:
        """The rows written, given the ids returned (`keep`: the indexes inserted)."""
        if keep is None:
            return written_rows(ids, *self)
        return written_rows(ids, [self.topics[n] for n in keep], [self.keys[n] for n in keep],
                            [self.values[n] for n in keep], [self.headers[n] for n in keep])


def columns(rows: Sequence[Pending], *, topic: str | None = None) -> Columns:
    """`rows` as `insert_sql` takes them. `topic`: every row's, whatever their own says."""
    return Columns([r.topic for r in rows] if topic is None else [topic] * len(rows),
                   [r.key for r in rows], [r.value for r in rows],
                   with_trace([headers_json(r.short, r.message_id) for r in rows]))


@lru_cache(maxsize=32)
def insert_sql(table: str, first: int = 1, *, only_of: str | None = None) -> str:
    """The one outbox INSERT, alone or as a part of a larger statement: `Columns` in
    $first..$first+3, in order, returning the ids. `only_of`: a CTE returning message ids;
    then $first+4 holds each row's message id, and only the rows of those go in."""
    if only_of is None:
        extra, names, where = "", "t, k, v, h, n", ""
    else:
        extra, names = f", ${first + 4}::text[]", "t, k, v, h, m, n"
        where = f" WHERE m IN (SELECT id FROM {only_of})"
    # WITH ORDINALITY: identity ids follow the input order, which the relay publishes in.
    return (f"INSERT INTO {table} (topic, key, value, headers) "
            f"SELECT t, k, v, h::jsonb FROM unnest(${first}::text[], ${first + 1}::bytea[], "
            f"${first + 2}::bytea[], ${first + 3}::text[]{extra}) WITH ORDINALITY AS u({names})"
            f"{where} ORDER BY n RETURNING id")


async def queue(conn: AsyncConnection | Any, table: Table, rows: Sequence[Pending], *,
                topic: str | None = None) -> list[OutboxRow]:
    """Queue `rows` in order, in the caller's transaction (an `AsyncConnection`, or the
    asyncpg connection under one), in one statement; returns the rows to publish after
    commit. `topic`: every row's topic, whatever their own says. asyncpg directly:
    SQLAlchemy's parameter and result handling would cost more than the statement at
    thousands of messages per second."""
    if not rows:
        return []
    cols = columns(rows, topic=topic)
    raw = await driver(conn) if isinstance(conn, AsyncConnection) else conn
    got = await raw.fetch(insert_sql(table.fullname), *cols)
    return cols.written([r[0] for r in got])


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
                 *, service: str, sweep_after_s: float = 2.0, batch: int = 1000,
                 delete_after_s: float = 0.1) -> None:
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
        # Acked rows are deleted together, at most this long after their acks (well under
        # `sweep_after_s`, so the sweeper does not publish them again meanwhile).
        self.delete_after_s = delete_after_s
        self._deleting: asyncio.Task[None] | None = None
        # Handed to `publish_soon`, not yet published, with when each was handed in.
        self._soon: list[tuple[float, OutboxRow]] = []
        self.left_to_sweeper = 0
        self._publishing: asyncio.Task[None] | None = None
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
            crash_point("after_produce_before_commit")  # acked, not deleted yet
        except Exception as exc:  # the rows stay; the sweeper gets them
            log.warning("%s outbox: publish deferred to sweeper (%s)", self.service,
                        type(exc).__name__)
            return
        metrics.OUTBOX_PUBLISHED.labels(self.service).inc(len(rows))
        # Only after every ack, and in the background with the deletes of the next
        # `delete_after_s`. Rows a sweeper holds make the delete wait for its commit (after
        # which they are gone); the sweeper itself never waits (SKIP LOCKED).
        self._acked += [r.id for r in rows]
        if self._deleting is None or self._deleting.done():
            self._deleting = asyncio.create_task(self._delete_soon(), name="outbox-delete")

    async def _delete_soon(self) -> None:
        await asyncio.sleep(self.delete_after_s)
        try:
            await self.delete_acked()
        except Exception as exc:  # published again by the sweeper, deduplicated downstream
            log.warning("%s outbox: delete of published rows failed (%s)", self.service,
                        type(exc).__name__)

    def publish_soon(self, rows: Sequence[OutboxRow]) -> None:
        """Publish committed rows in the background, in order, without waiting for the
        acks. Rows that come in while a publish waits for the broker go out together in
        the next one: rows leave at once when the service is idle, and under load the
        relay is called a few times per batch rather than once per handler call (each call
        is a wait for acks and a delete). Rows are durable before they are handed in, so
        nothing depends on this queue: after a crash the sweeper publishes them."""
        if not rows:
            return
        now = time.monotonic()
        self._soon += [(now, row) for row in rows]
        if self._publishing is None or self._publishing.done():
            self._publishing = asyncio.create_task(self._publish_soon(),
                                                   name=f"{self.service}-publish")

    async def _publish_soon(self) -> None:
        while self._soon:
            queued, self._soon = self._soon[:self.batch], self._soon[self.batch:]
            await self.publish(self._fresh(queued))  # never raises: failures -> sweeper

    def _fresh(self, queued: list[tuple[float, OutboxRow]]) -> list[OutboxRow]:
        """Rows queued for longer than half the sweep delay are left to the sweeper (of
        this replica or another), which may already be publishing them: publishing them
        here too would only make copies. They stay in the outbox until published, so
        nothing is lost; under a backlog (a pile of due timers) this spared 20 % copies."""
        oldest = time.monotonic() - self.sweep_after_s / 2
        fresh = [row for at, row in queued if at >= oldest]
        self.left_to_sweeper += len(queued) - len(fresh)
        return fresh

    async def drain(self) -> None:
        """Wait until every row handed to `publish_soon` was published (or left to the
        sweeper)."""
        while self._publishing is not None and not self._publishing.done():
            await self._publishing
        if self._deleting is not None:  # and their deletes (within `delete_after_s`)
            await asyncio.gather(self._deleting, return_exceptions=True)

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
            await pause(self._stopping, interval_s)

    def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        """Delete what was published, then close the relay's own connection (the runtime
        calls this after stop)."""
        if self._deleting is not None:
            await asyncio.gather(self._deleting, return_exceptions=True)
        try:
            await self.delete_acked()
        except Exception as exc:
            log.warning("%s outbox: delete at close failed (%s)", self.service,
                        type(exc).__name__)
        async with self._conn_lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await conn.close(timeout=2)

    async def delete_acked(self) -> None:
        """Delete the published rows now (autocommit). Calls that arrive while a delete is
        running go out together in the next statement. A failure leaves the rows to the
        sweeper (published again, deduplicated by the consumers) and reconnects next time."""
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
