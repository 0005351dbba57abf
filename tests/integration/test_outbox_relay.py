"""The outbox relay on real Postgres: rows are deleted only once the broker acked them, a
failed publish leaves them to the sweeper, and two sweeping replicas never take the same row.
Each test owns an outbox table in a schema of its own (the services' outboxes may hold rows
other tests left for their sweepers)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import MetaData, Table, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.contracts.envelope import message_key
from shared.contracts.profile import ProfileChange
from shared.db import OutboxRelay, OutboxRow, add_to_outbox, create_engine, outbox_table
from shared.kafka.producer import BATCH_FROM, send_batched
from shared.settings import Settings
from tests.support.topics import read_topic

pytestmark = pytest.mark.integration


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings.database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def table(engine: AsyncEngine, unique: str) -> AsyncIterator[Table]:
    table = outbox_table(MetaData(schema=f"outbox_test_{unique}"))
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{table.schema}"'))
        await conn.run_sync(table.metadata.create_all)
    yield table
    async with engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA "{table.schema}" CASCADE'))


class FakeProducer:
    """Acks (or fails) every send; `hold` keeps the acks back until it is set."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.hold = asyncio.Event()
        self.hold.set()
        self.sent: list[tuple[str, bytes, bytes | None, list[tuple[str, bytes]]]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    async def send(self, topic: str, value: bytes, key: bytes | None = None,
                   partition: int | None = None,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[None]:
        self.sent.append((topic, value, key, headers or []))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def ack() -> None:
            await self.hold.wait()
            if self.fail:
                future.set_exception(ConnectionError("broker down"))
            else:
                future.set_result(None)
        asyncio.get_running_loop().create_task(ack())
        return future


def relay(engine: AsyncEngine, table: Table, producer: Any, **kw: Any) -> OutboxRelay:
    return OutboxRelay(engine, table, producer, service="test", **kw)


def changes(ws: str, n: int) -> list[tuple[bytes, ProfileChange]]:
    return [(message_key(ws, f"p{i}"), ProfileChange(
        id=f"{ws}-{i}", workspace_id=ws, profile_id=f"p{i}", kind="traits_changed",
        data={"traits": ["plan"]}, occurred_at=datetime.now(UTC))) for i in range(n)]


async def write(engine: AsyncEngine, table: Table, topic: str, ws: str, n: int
                ) -> list[OutboxRow]:
    async with engine.begin() as conn:
        return await add_to_outbox(conn, table, topic, "profile-changes", changes(ws, n))


async def count(engine: AsyncEngine, table: Table) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_publish_sends_the_rows_in_order_then_deletes_them(
        engine: AsyncEngine, table: Table, settings: Settings, topics: list[str],
        unique: str) -> None:
    topic = settings.topic("profile-changes")
    rows = await write(engine, table, topic, unique, 3)
    assert [r.id for r in rows] == sorted(r.id for r in rows)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    fast = relay(engine, table, producer)
    try:
        await fast.publish(rows)
    finally:
        await producer.stop()
    # The delete follows the acks within `delete_after_s`, off the caller's path.
    await asyncio.sleep(fast.delete_after_s + 0.5)
    assert await count(engine, table) == 0
    await fast.close()
    got = await read_topic(settings.kafka_bootstrap, topic, lambda rs: sum(
        r.value.startswith(f'{{"id":"{unique}-'.encode()) for r in rs) >= 3)
    mine = [r for r in got if r.value.startswith(f'{{"id":"{unique}-'.encode())]
    assert sorted(dict(r.headers)["message-id"] for r in mine) == [
        f"{unique}-{i}".encode() for i in range(3)]
    assert {r.key for r in mine} == {message_key(unique, f"p{i}") for i in range(3)}


async def test_a_failed_publish_leaves_the_rows_to_the_sweeper(
        engine: AsyncEngine, table: Table, unique: str) -> None:
    rows = await write(engine, table, "t", unique, 2)
    await relay(engine, table, FakeProducer(fail=True)).publish(rows)  # logs, never raises
    assert await count(engine, table) == 2
    with pytest.raises(ConnectionError):  # a failed sweep rolls its claim back
        await relay(engine, table, FakeProducer(fail=True), sweep_after_s=0).sweep_once()
    assert await count(engine, table) == 2
    producer = FakeProducer()
    assert await relay(engine, table, producer, sweep_after_s=0).sweep_once() == 2
    assert [s[1] for s in producer.sent] == [r.value for r in rows]
    assert producer.sent[0][3] == [(k, v.encode()) for k, v in
                                   [("content-type", "application/json"),
                                    ("schema", "profile-changes/v1"),
                                    ("message-id", f"{unique}-0")]]
    assert await count(engine, table) == 0


async def test_recent_rows_wait_for_the_fast_path(
        engine: AsyncEngine, table: Table, unique: str) -> None:
    await write(engine, table, "t", unique, 1)
    assert await relay(engine, table, FakeProducer(), sweep_after_s=60).sweep_once() == 0
    assert await count(engine, table) == 1


async def test_two_sweeping_replicas_never_take_the_same_row(
        engine: AsyncEngine, table: Table, unique: str) -> None:
    await write(engine, table, "t", unique, 4)
    slow, other = FakeProducer(), FakeProducer()
    slow.hold.clear()
    first = asyncio.create_task(relay(engine, table, slow, sweep_after_s=0).sweep_once())
    while len(slow.sent) < 4:  # the first replica holds the rows, waiting for acks
        await asyncio.sleep(0.01)
    assert await relay(engine, table, other, sweep_after_s=0).sweep_once() == 0
    slow.hold.set()
    assert await first == 4
    assert other.sent == [] and await count(engine, table) == 0


async def test_batched_sends_pick_sends_partitions_and_keep_each_keys_order(
        settings: Settings, topics: list[str], unique: str) -> None:
    """The same keys through `send()` (aiokafka's own partitioner) and through
    `send_batched`, both as batches of their own (many records a partition) and as
    `send()`s with our partition (few): every key lands where `send()` put it, and a key's
    records in the order they were given."""
    topic = settings.topic("profile-changes")
    keys = [message_key(unique, f"p{i}") for i in range(40)]
    pad = b"x" * 200
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        plain = [await producer.send(topic, f"{unique}-send-{i}".encode(), key=key)
                 for i, key in enumerate(keys)]
        await asyncio.gather(*plain)
        many = [(topic, key, f"{unique}-many-{n}-{i}-".encode() + pad, [])
                for n in range(BATCH_FROM) for i, key in enumerate(keys)]  # 40 keys x 16
        batches = await send_batched(producer, many)
        assert len(batches) > 3  # several (full) batches a partition
        few = [(topic, key, f"{unique}-few-{i}".encode(), []) for i, key in enumerate(keys[:2])]
        await asyncio.gather(*batches, *await send_batched(producer, few))
    finally:
        await producer.stop()
    expected = len(keys) * (1 + BATCH_FROM) + 2
    got = [r for r in await read_topic(settings.kafka_bootstrap, topic, lambda rs: sum(
        r.value.startswith(unique.encode()) for r in rs) >= expected)
        if r.value.startswith(unique.encode())]
    assert len(got) == expected
    by_send = {r.key: r.partition for r in got if b"-send-" in r.value}
    assert len(by_send) == len(keys) and len(set(by_send.values())) == 3
    assert all(r.partition == by_send[r.key] for r in got)
    for i, key in enumerate(keys):  # offsets rise in the order the records were given
        mine = sorted((r for r in got if r.key == key and b"-many-" in r.value),
                      key=lambda r: r.offset)
        assert [r.value for r in mine] == [f"{unique}-many-{n}-{i}-".encode() + pad
                                           for n in range(BATCH_FROM)]
