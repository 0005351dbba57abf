"""One consumer group for a service's topics, against the real broker and Postgres.

- the combined group starts where the per-topic groups it replaces committed: nothing
  handled twice, nothing skipped, and the adopted offsets are committed for the new group
- a poison record on one topic goes to the DLQ under its spec's name while the other
  topic's records flow, and both are committed in one request per poll
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from aiokafka import TopicPartition
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.contracts.events import Event
from shared.kafka import ConsumerLoop, ConsumerSpec, create_producer
from shared.kafka.admin import ensure_topics
from shared.kafka.codec import header
from shared.kafka.group_offsets import committed_offsets
from shared.settings import Settings
from tests.integration.test_consumer_loop import (
    count,
    effects_schema,
    failing_on,
    recording_handler,
    run_until,
)
from tests.support.topics import read_until

pytestmark = pytest.mark.integration

World = tuple[Settings, AsyncEngine, Table, Table, str, str]


@pytest.fixture
async def world(settings: Settings, topics: list[str], unique: str) -> AsyncIterator[World]:
    """Two topics of their own, and a table + inbox in a schema of their own."""
    first, second = settings.topic(f"both-a-{unique}"), settings.topic(f"both-b-{unique}")
    await ensure_topics(settings, [first, second])
    async with effects_schema(settings, f"c_{unique}") as (engine, effects, inbox):
        yield settings, engine, effects, inbox, first, second


def event(name: str) -> bytes:
    return orjson.dumps({"id": name, "workspace_id": "w", "type": "track", "event": "X",
                         "user_id": "u", "timestamp": "2026-11-23T10:00:00Z",
                         "received_at": "2026-11-23T10:00:00Z"})


async def produce(settings: Settings, batches: dict[str, list[bytes]]) -> None:
    producer = create_producer(settings)
    await producer.start()
    try:
        for topic, values in batches.items():
            for value in values:  # one key: one partition per topic
                await producer.send_and_wait(topic, value, key=b"w:u")
    finally:
        await producer.stop()


async def test_combined_group_starts_where_the_per_topic_groups_committed(
        world: World, unique: str) -> None:
    settings, engine, effects, inbox, first, second = world
    calls: list[str] = []
    handler = recording_handler(engine, effects, inbox, calls)
    specs = [ConsumerSpec(f"svc-{unique}.a", first, Event, handler),
             ConsumerSpec(f"svc-{unique}.b", second, Event, handler)]
    producer = create_producer(settings)
    await producer.start()

    # Before the upgrade: one group per topic, each committed after its records.
    await produce(settings, {first: [event(f"a{i}") for i in range(3)],
                             second: [event(f"b{i}") for i in range(4)]})
    for spec, total in zip(specs, (3, 7), strict=True):
        await run_until(ConsumerLoop(spec, settings, producer),
                        lambda n=total: _at_least(calls, n))
    assert sorted(calls) == sorted([f"a{i}" for i in range(3)] + [f"b{i}" for i in range(4)])

    # The upgrade: one group for both, starting at the old groups' commits.
    await produce(settings, {first: [event("a3"), event("a4")], second: [event("b4")]})
    loop = ConsumerLoop(specs, settings, producer, name=f"svc-{unique}")
    assert loop.group == f"{settings.topic_prefix}svc-{unique}"
    await run_until(loop, lambda: _at_least(calls, 10))
    await producer.stop()
    assert sorted(calls[7:]) == ["a3", "a4", "b4"]
    assert len(calls) == 10  # nothing handled twice (not even a no-op), nothing skipped
    assert await count(engine, effects) == 10

    # The new group now has its own commits, at the end of both topics' partitions.
    own = await committed_offsets(settings.kafka_bootstrap, loop.group,
                                  [TopicPartition(t, p) for t in (first, second)
                                   for p in range(settings.topic_partitions)])
    assert sorted(own.values())[-2:] == [5, 5]  # a0..a4 and b0..b4, one partition each
    assert sum(own.values()) == 10


async def test_poison_on_one_topic_does_not_stop_the_other(world: World, unique: str) -> None:
    settings, engine, effects, inbox, first, second = world
    calls: list[str] = []
    inner = recording_handler(engine, effects, inbox, calls)
    picky = failing_on("a666", ValueError("this one can never work"), inner)

    await produce(settings, {first: [event("a1"), event("a666"), b"{not json", event("a2")],
                             second: [event(f"b{i}") for i in range(5)]})
    producer = create_producer(settings)
    await producer.start()
    specs = [ConsumerSpec(f"svc-{unique}.a", first, Event, picky, max_attempts=2),
             ConsumerSpec(f"svc-{unique}.b", second, Event, inner)]
    loop = ConsumerLoop(specs, settings, producer, name=f"svc-{unique}")
    await run_until(loop, lambda: _count_at_least(engine, effects, 7))
    await producer.stop()
    assert sorted(calls.count(f"b{i}") for i in range(5)) == [1] * 5
    assert {"a1", "a2"} <= set(calls)

    dlq = await read_until(settings.kafka_bootstrap, settings.topic("dlq"), lambda rs: len(
        [r for r in rs if header(r.headers, "dlq.topic") == first]) >= 2)
    mine = [r for r in dlq if header(r.headers, "dlq.topic") == first]
    assert {header(r.headers, "dlq.consumer") for r in mine} == {f"svc-{unique}.a"}
    assert {header(r.headers, "dlq.offset") for r in mine} == {"1", "2"}
    assert not [r for r in dlq if header(r.headers, "dlq.topic") == second]


async def _at_least(calls: list[str], n: int) -> bool:
    return len(calls) >= n


async def _count_at_least(engine: AsyncEngine, effects: Table, n: int) -> bool:
    return await count(engine, effects) >= n


async def test_a_dlq_stop_on_one_topic_does_not_stall_the_other(
        world: World, unique: str) -> None:
    settings, engine, effects, inbox, first, second = world
    own = settings.model_copy(update={"consumer_dlq_window": 20, "consumer_dlq_max_ratio": 0.5})
    calls: list[str] = []
    handler = recording_handler(engine, effects, inbox, calls)
    await produce(own, {first: [event("a1")] + [b"{broken" for _ in range(29)],
                        second: [event(f"b{i}") for i in range(3)]})
    producer = create_producer(own)
    await producer.start()
    specs = [ConsumerSpec(f"svc-{unique}.a", first, Event, handler),
             ConsumerSpec(f"svc-{unique}.b", second, Event, handler)]
    loop = ConsumerLoop(specs, own, producer, name=f"svc-{unique}")

    async def halted_and_flowing() -> bool:
        if loop.halted_specs and len(calls) == 4:  # b0..b2 and a1
            await produce(own, {second: [event("b-after")]})
            return True
        return False

    task = asyncio.create_task(loop.run())
    try:
        deadline = asyncio.get_running_loop().time() + 45
        while not await halted_and_flowing():
            assert not task.done() and asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        # The other topic keeps flowing after the stop.
        while "b-after" not in calls:
            assert not task.done() and asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
    finally:
        loop.stop()
        await asyncio.wait_for(task, 15)
    await producer.stop()
    assert list(loop.halted_specs) == [f"svc-{unique}.a"]
    assert loop.halted and "limit 50%" in loop.halted
    own_offsets = await committed_offsets(
        own.kafka_bootstrap, loop.group,
        [TopicPartition(t, p) for t in (first, second) for p in range(own.topic_partitions)])
    assert not [tp for tp in own_offsets if tp.topic == first]  # read again after a restart
    assert sum(v for tp, v in own_offsets.items() if tp.topic == second) == 4

    # /readyz names the stopped topic's consumer only.
    from shared.runtime import ServiceParts, ServiceRuntime
    runtime = ServiceRuntime(ServiceParts("test", inbox), own)
    runtime.loops.append(loop)
    checks = await runtime.ready()
    assert checks[f"consumer:svc-{unique}.a"] is False
    assert f"consumer:svc-{unique}.b" not in checks
    await runtime.engine.dispose()
