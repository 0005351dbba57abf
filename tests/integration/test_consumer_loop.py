"""The consumer loop's promises, against the real broker and Postgres.

- a crash between the handler's effect and the offset commit redelivers, without a second effect
- a poison message goes to the DLQ with the error, and the partition keeps flowing
- an outage (transient error) pauses and resumes without dead-lettering anything
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import orjson
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.contracts.events import Event
from shared.db import claim_new, create_engine, inbox_table
from shared.kafka import ConsumerLoop, ConsumerSpec, InvalidMessage, Record, create_producer
from shared.kafka.admin import ensure_topics
from shared.kafka.codec import header
from shared.settings import Settings
from tests.support.topics import read_until

pytestmark = pytest.mark.integration
EMAIL = "ada.lovelace@example.com"


class Crash(Exception):
    """Stands for the process dying: nothing after it runs."""


@pytest.fixture
async def world(settings: Settings, topics: list[str],
                unique: str) -> AsyncIterator[tuple[Settings, AsyncEngine, Table, Table, str]]:
    """A topic of its own, and a table + inbox of its own in a schema of its own."""
    topic = settings.topic(f"loop-{unique}")
    await ensure_topics(settings, [topic])
    async with effects_schema(settings, f"t_{unique}") as (engine, effects, inbox):
        yield settings, engine, effects, inbox, topic


@asynccontextmanager
async def effects_schema(settings: Settings,
                         schema: str) -> AsyncIterator[tuple[AsyncEngine, Table, Table]]:
    """An `effects` table and an inbox in a schema of their own, dropped afterwards."""
    metadata = MetaData(schema=schema)
    effects = Table("effects", metadata, Column("id", String, primary_key=True),
                    Column("n", Integer))
    inbox = inbox_table(metadata)
    engine = create_engine(settings.database_url)
    async with engine.begin() as conn:
        await conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        await conn.run_sync(metadata.create_all)
    try:
        yield engine, effects, inbox
    finally:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        await engine.dispose()


def event(i: int) -> bytes:
    return orjson.dumps({"id": f"e{i}", "workspace_id": "w", "type": "track", "event": "X",
                         "user_id": "u", "timestamp": "2026-11-23T10:00:00Z",
                         "received_at": "2026-11-23T10:00:00Z"})


async def produce(settings: Settings, topic: str, values: list[bytes]) -> None:
    producer = create_producer(settings)
    await producer.start()
    try:
        for value in values:  # one key: one partition, so order is what we produce
            await producer.send_and_wait(topic, value, key=b"w:u")
    finally:
        await producer.stop()


def recording_handler(engine: AsyncEngine, effects: Table, inbox: Table, calls: list[str]):
    async def handle(records: list[Record]) -> None:
        calls.extend(r.value.id for r in records)
        async with engine.begin() as conn:
            fresh = await claim_new(conn, inbox, "test", [r.value.id for r in records])
            for r in records:
                if r.value.id in fresh:
                    await conn.execute(insert(effects).values(id=r.value.id, n=1))
    return handle


def failing_on(bad_id: str, error: Exception,
               inner: Callable[[list[Record]], Awaitable[None]],
               ) -> Callable[[list[Record]], Awaitable[None]]:
    """`inner`, except that a batch holding event `bad_id` raises `error`."""
    async def handler(records: list[Record]) -> None:
        if any(r.value.id == bad_id for r in records):
            raise error
        await inner(records)
    return handler


async def run_until(loop: ConsumerLoop, condition, timeout: float = 45.0) -> None:
    task = asyncio.create_task(loop.run())
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not await condition():
            if task.done():
                task.result()
            assert asyncio.get_running_loop().time() < deadline, "condition not reached"
            await asyncio.sleep(0.05)
    finally:
        loop.stop()
        await asyncio.wait_for(task, 15)


async def count(engine: AsyncEngine, effects: Table) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(effects))).scalar_one()


async def test_crash_before_commit_redelivers_without_duplicate_effect(world) -> None:
    settings, engine, effects, inbox, topic = world
    await produce(settings, topic, [event(i) for i in range(5)])
    calls: list[str] = []
    spec = ConsumerSpec("loop-test", topic, Event, recording_handler(engine, effects, inbox, calls))
    producer = create_producer(settings)
    await producer.start()

    class CrashingLoop(ConsumerLoop):
        async def _commit(self, consumer, offsets):  # dies after the effect, before commit
            raise Crash

    with pytest.raises(Crash):
        await CrashingLoop(spec, settings, producer).run()
    assert await count(engine, effects) == 5
    assert len(calls) == 5

    # The restarted consumer (same group) gets the same messages again ...
    await run_until(ConsumerLoop(spec, settings, producer), lambda: _true_after(calls, 10))
    # ... and the inbox makes the second delivery a no-op.
    assert sorted(calls) == sorted([f"e{i}" for i in range(5)] * 2)
    assert await count(engine, effects) == 5

    # And now the offsets are committed: a third start sees nothing new.
    await produce(settings, topic, [event(99)])
    await run_until(ConsumerLoop(spec, settings, producer), lambda: _true_after(calls, 11))
    assert calls[-1] == "e99" and len(calls) == 11
    await producer.stop()

    # /metrics shows the batch sizes polled and how far behind the partition's end it is.
    from prometheus_client import REGISTRY

    assert REGISTRY.get_sample_value("touchpoint_consumer_batch_records_count",
                                      {"consumer": "loop-test"}) >= 2
    lags = [s.value for metric in REGISTRY.collect() if metric.name == "touchpoint_consumer_lag"
            for s in metric.samples if s.labels["consumer"] == "loop-test"]
    assert lags and all(lag == 0 for lag in lags)


async def _true_after(calls: list[str], n: int) -> bool:
    return len(calls) >= n


async def test_poison_messages_go_to_dlq_and_partition_keeps_flowing(world) -> None:
    settings, engine, effects, inbox, topic = world
    # The refused record quotes an address (as a value and as a key): the DLQ keeps the
    # record, but its error header names the fields and error types only.
    await produce(settings, topic, [event(1), b"{not json", event(2),
                                    orjson.dumps({"id": "bad", "type": "track",
                                                  "timestamp": EMAIL,
                                                  "traits": {EMAIL: "a\x00"}}), event(3),
                                    event(666), event(4)])
    calls: list[str] = []
    handler = failing_on("e666", ValueError(f"this one can never work: {EMAIL}"),
                         recording_handler(engine, effects, inbox, calls))

    producer = create_producer(settings)
    await producer.start()
    spec = ConsumerSpec("loop-poison", topic, Event, handler, max_attempts=2)
    await run_until(ConsumerLoop(spec, settings, producer),
                    lambda: _count_is(engine, effects, 4))
    await producer.stop()
    assert await count(engine, effects) == 4  # e1..e4 all applied despite three bad ones

    dlq = await read_until(settings.kafka_bootstrap, settings.topic("dlq"), lambda rs: len(
        [r for r in rs if header(r.headers, "dlq.topic") == topic]) >= 3)
    mine = [r for r in dlq if header(r.headers, "dlq.topic") == topic]
    assert [r.value for r in mine][0] == b"{not json"
    assert header(mine[0].headers, "dlq.error-type") == "InvalidMessage"
    assert "received_at: missing" in (header(mine[1].headers, "dlq.error") or "")
    assert "timestamp: datetime_" in (header(mine[1].headers, "dlq.error") or "")
    assert (header(mine[2].headers, "dlq.error") or "").startswith("ValueError")
    assert "in handler" in (header(mine[2].headers, "dlq.error") or "")
    assert not [r for r in mine if EMAIL in str(r.headers)]
    assert header(mine[2].headers, "dlq.consumer") == "loop-poison"
    assert {header(r.headers, "dlq.offset") for r in mine} == {"1", "3", "5"}


async def _count_is(engine: AsyncEngine, effects: Table, n: int) -> bool:
    return await count(engine, effects) >= n


async def test_outage_pauses_and_resumes_without_dead_lettering(world) -> None:
    settings, engine, effects, inbox, topic = world
    await produce(settings, topic, [event(i) for i in range(3)])
    calls: list[str] = []
    inner = recording_handler(engine, effects, inbox, calls)
    outage = {"left": 4}

    async def handler(records: list[Record]) -> None:
        if outage["left"] > 0:
            outage["left"] -= 1
            raise ConnectionRefusedError("database is down")
        await inner(records)

    producer = create_producer(settings)
    await producer.start()
    spec = ConsumerSpec("loop-outage", topic, Event, handler, max_attempts=1)
    await run_until(ConsumerLoop(spec, settings, producer), lambda: _count_is(engine, effects, 3))
    await producer.stop()
    assert outage["left"] == 0 and await count(engine, effects) == 3


async def test_invalid_message_raised_by_handler_is_dead_lettered_alone(world) -> None:
    settings, engine, effects, inbox, topic = world
    await produce(settings, topic, [event(1), event(2), event(3)])
    calls: list[str] = []
    handler = failing_on("e2", InvalidMessage("e2 names an unknown workspace"),
                         recording_handler(engine, effects, inbox, calls))

    producer = create_producer(settings)
    await producer.start()
    await run_until(ConsumerLoop(ConsumerSpec("loop-invalid", topic, Event, handler), settings,
                                 producer), lambda: _count_is(engine, effects, 2))
    await producer.stop()
    assert sorted(calls) == ["e1", "e3"]


async def test_dead_letter_ratio_limit_halts_without_committing(world) -> None:
    settings, engine, effects, inbox, topic = world
    own = settings.model_copy(update={"consumer_dlq_window": 20, "consumer_dlq_max_ratio": 0.5})
    await produce(own, topic, [event(1)] + [b"{broken" for _ in range(29)])
    calls: list[str] = []
    producer = create_producer(own)
    await producer.start()
    spec = ConsumerSpec(f"loop-ratio-{topic[-6:]}", topic, Event,
                        recording_handler(engine, effects, inbox, calls))
    loop = ConsumerLoop(spec, own, producer)

    async def halted() -> bool:
        return loop.halted is not None

    await run_until(loop, halted)
    await producer.stop()
    assert loop.halted and "limit 50%" in loop.halted
    # Nothing committed: the restarted consumer reads the whole topic again.
    from aiokafka import AIOKafkaConsumer, TopicPartition
    probe = AIOKafkaConsumer(bootstrap_servers=own.kafka_bootstrap, group_id=loop.group,
                             enable_auto_commit=False)
    await probe.start()
    try:
        for partition in range(own.topic_partitions):
            assert await probe.committed(TopicPartition(topic, partition)) is None
    finally:
        await probe.stop()
    # /readyz names it.
    from shared.runtime import ServiceParts, ServiceRuntime
    runtime = ServiceRuntime(ServiceParts("test", inbox), own)
    runtime.loops.append(loop)
    checks = await runtime.ready()
    assert checks[f"consumer:{spec.name}"] is False
    await runtime.engine.dispose()


async def test_the_offsets_of_several_polls_go_in_one_commit_once_the_records_stop(
        world) -> None:
    """While records flow, one commit per COMMIT_EVERY_S, not per poll; when they stop,
    everything handled is committed at once (a restart redelivers nothing)."""
    settings, engine, effects, inbox, topic = world
    one_per_poll = settings.model_copy(update={"consumer_max_records": 1})
    await produce(settings, topic, [event(i) for i in range(5)])
    calls: list[str] = []
    spec = ConsumerSpec("loop-commits", topic, Event,
                        recording_handler(engine, effects, inbox, calls))
    producer = create_producer(settings)
    await producer.start()
    commits: list[dict] = []

    class CountingLoop(ConsumerLoop):
        COMMIT_EVERY_S = 60.0  # only the first poll's commit, then the one when they stop

        async def _commit(self, consumer, offsets):
            commits.append({tp.partition: offset for tp, offset in offsets.items()})
            await super()._commit(consumer, offsets)

    loop = CountingLoop(spec, one_per_poll, producer)
    await run_until(loop, lambda: _true_after_commits(calls, 5, commits, 2))
    assert sorted(calls) == [f"e{i}" for i in range(5)]  # five polls of one record
    assert len(commits) == 2 and list(commits[-1].values()) == [5]
    # Committed: a restart reads only what comes after.
    await produce(settings, topic, [event(99)])
    await run_until(ConsumerLoop(spec, settings, producer), lambda: _true_after(calls, 6))
    await producer.stop()
    assert calls[5:] == ["e99"]


async def _true_after_commits(calls: list[str], n: int, commits: list[dict], c: int) -> bool:
    return len(calls) >= n and len(commits) >= c


async def test_a_small_poll_waits_a_bounded_time_for_more_records(world) -> None:
    """While records flow, a poll of fewer than `consumer_linger_records` records waits up
    to `consumer_linger_ms` for more: records produced apart reach the handler as one batch,
    in order; a lone record is handled once the wait runs out."""
    settings, engine, effects, inbox, topic = world
    lingering = settings.model_copy(update={"consumer_linger_ms": 5000,
                                            "consumer_linger_records": 3})
    calls: list[str] = []
    batches: list[list[str]] = []
    inner = recording_handler(engine, effects, inbox, calls)

    async def handler(records: list[Record]) -> None:
        batches.append([r.value.id for r in records])
        await inner(records)

    held = asyncio.Event()

    class Watched(ConsumerLoop):
        FLOWING_S = math.inf  # every poll counts as part of a flow, the first one too

        async def _linger(self, consumer, polled):
            held.set()  # a small poll is waiting: what comes now joins it
            await super()._linger(consumer, polled)

    producer = create_producer(settings)
    await producer.start()
    loop = Watched(ConsumerSpec("loop-linger", topic, Event, handler), lingering, producer)
    await produce(settings, topic, [event(0)])
    task = asyncio.create_task(loop.run())
    try:
        await asyncio.wait_for(held.wait(), 45)
        await produce(settings, topic, [event(1), event(2)])
        await _until(lambda: len(calls) >= 3)
        assert batches == [["e0", "e1", "e2"]]
        held.clear()
        await produce(settings, topic, [event(3)])
        await asyncio.wait_for(held.wait(), 45)
        started = asyncio.get_running_loop().time()
        await _until(lambda: len(calls) >= 4)
        waited = asyncio.get_running_loop().time() - started
        assert batches[-1] == ["e3"] and 4.0 < waited < 15.0
    finally:
        loop.stop()
        await asyncio.wait_for(task, 15)
        await producer.stop()
    assert await count(engine, effects) == 4


async def _until(condition: Callable[[], bool], timeout: float = 45.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)
