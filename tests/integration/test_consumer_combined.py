"""One consumer group for a service's topics, against the real broker and Postgres.

- the combined group starts where the per-topic groups it replaces committed: nothing
  handled twice, nothing skipped, and the adopted offsets are committed for the new group
- a poison record on one topic goes to the DLQ under its spec's name while the other
  topic's records flow, and both are committed in one request per poll
- with a joint handler, a poll holding both topics' records is one call (one transaction),
  redelivered without a second effect; a poison record in one topic falls back to the
  per-topic handlers without losing the other's; an outage pauses and retries the joint
  call; a DLQ stop of one topic keeps the other flowing (the poison and stop tests run
  with and without a joint handler)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from aiokafka import TopicPartition
from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.contracts.events import Event
from shared.db import claim_new
from shared.kafka import ConsumerLoop, ConsumerSpec, Record, create_producer
from shared.kafka.admin import ensure_topics
from shared.kafka.codec import header
from shared.kafka.errors import DependencyUnavailable
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
Joint = list[dict[str, list[str]]]  # the joint handler's calls: record ids by spec name


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


def joint_handler(engine: AsyncEngine, effects: Table, inbox: Table, calls: list[str],
                  joint: Joint, bad_id: str | None = None, outages: int = 0):
    """`recording_handler` for a poll of both topics: one call, one transaction. A poll
    holding `bad_id` raises a non-transient error; the first `outages` calls a transient one."""
    async def handle(polled: dict[str, list[Record]]) -> None:
        joint.append({name: [r.value.id for r in rs] for name, rs in polled.items()})
        if len(joint) <= outages:
            raise DependencyUnavailable("the database is away")
        if bad_id is not None and any(r.value.id == bad_id for rs in polled.values()
                                      for r in rs):
            raise ValueError("this one can never work")
        every = [r for rs in polled.values() for r in rs]
        calls.extend(r.value.id for r in every)
        async with engine.begin() as conn:
            fresh = await claim_new(conn, inbox, "test", [r.value.id for r in every])
            for r in every:
                if r.value.id in fresh:
                    await conn.execute(insert(effects).values(id=r.value.id, n=1))
    return handle


async def test_a_poll_of_both_topics_goes_to_the_joint_handler_once(
        world: World, unique: str) -> None:
    settings, engine, effects, inbox, first, second = world
    calls: list[str] = []
    joint: Joint = []
    handler = recording_handler(engine, effects, inbox, calls)
    both = joint_handler(engine, effects, inbox, calls, joint)
    specs = [ConsumerSpec(f"svc-{unique}.a", first, Event, handler, joint=both),
             ConsumerSpec(f"svc-{unique}.b", second, Event, handler, joint=both)]
    await produce(settings, {first: [event(f"a{i}") for i in range(3)],
                             second: [event(f"b{i}") for i in range(3)]})
    producer = create_producer(settings)
    await producer.start()

    class CrashingLoop(ConsumerLoop):
        async def _commit(self, consumer, offsets):  # dies after the effect, before commit
            raise Crash

    with pytest.raises(Crash):
        await CrashingLoop(specs, settings, producer, name=f"svc-{unique}").run()
    # Both topics were fetched by the first poll: one joint call, in table order.
    assert joint == [{f"svc-{unique}.a": ["a0", "a1", "a2"], f"svc-{unique}.b": ["b0", "b1", "b2"]}]
    assert await count(engine, effects) == 6

    # Redelivered after the crash: the joint call again, and no second effect.
    loop = ConsumerLoop(specs, settings, producer, name=f"svc-{unique}")
    await run_until(loop, lambda: _at_least(calls, 12))
    await producer.stop()
    assert joint[1] == joint[0] and len(joint) == 2
    assert sorted(calls) == sorted(2 * [f"{t}{i}" for t in "ab" for i in range(3)])
    assert await count(engine, effects) == 6
    own = await committed_offsets(settings.kafka_bootstrap, loop.group,
                                  [TopicPartition(t, p) for t in (first, second)
                                   for p in range(settings.topic_partitions)])
    assert sum(own.values()) == 6


async def test_an_outage_in_the_joint_handler_pauses_and_retries_it(
        world: World, unique: str) -> None:
    settings, engine, effects, inbox, first, second = world
    calls: list[str] = []
    joint: Joint = []
    handler = recording_handler(engine, effects, inbox, calls)
    both = joint_handler(engine, effects, inbox, calls, joint, outages=2)
    # One attempt: a failure taken for the records' fault would dead-letter them at once.
    specs = [ConsumerSpec(f"svc-{unique}.a", first, Event, handler, max_attempts=1, joint=both),
             ConsumerSpec(f"svc-{unique}.b", second, Event, handler, max_attempts=1,
                          joint=both)]
    await produce(settings, {first: [event("a0"), event("a1")], second: [event("b0")]})
    producer = create_producer(settings)
    await producer.start()
    loop = ConsumerLoop(specs, settings, producer, name=f"svc-{unique}")
    await run_until(loop, lambda: _count_at_least(engine, effects, 3))
    await producer.stop()
    assert len(joint) == 3 and joint[0] == joint[1] == joint[2]  # retried as one, not split
    assert sorted(calls) == ["a0", "a1", "b0"]  # the per-topic handlers never ran
    assert await count(engine, effects) == 3


class Crash(Exception):
    """Stands for the process dying: nothing after it runs."""


@pytest.mark.parametrize("with_joint", [False, True])
async def test_poison_on_one_topic_does_not_stop_the_other(world: World, unique: str,
                                                           with_joint: bool) -> None:
    settings, engine, effects, inbox, first, second = world
    calls: list[str] = []
    joint: Joint = []
    inner = recording_handler(engine, effects, inbox, calls)
    picky = failing_on("a666", ValueError("this one can never work"), inner)
    both = (joint_handler(engine, effects, inbox, calls, joint, bad_id="a666")
            if with_joint else None)

    await produce(settings, {first: [event("a1"), event("a666"), b"{not json", event("a2")],
                             second: [event(f"b{i}") for i in range(5)]})
    producer = create_producer(settings)
    await producer.start()
    specs = [ConsumerSpec(f"svc-{unique}.a", first, Event, picky, max_attempts=2, joint=both),
             ConsumerSpec(f"svc-{unique}.b", second, Event, inner, joint=both)]
    loop = ConsumerLoop(specs, settings, producer, name=f"svc-{unique}")
    await run_until(loop, lambda: _count_at_least(engine, effects, 7))
    await producer.stop()
    assert sorted(calls.count(f"b{i}") for i in range(5)) == [1] * 5
    assert {"a1", "a2"} <= set(calls)
    assert await count(engine, effects) == 7  # every b, a1 and a2: nothing lost
    if with_joint:  # the joint call met the poison and fell back to the topics' handlers
        assert any("a666" in ids for call in joint for ids in call.values())

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


@pytest.mark.parametrize("with_joint", [False, True])
async def test_a_dlq_stop_on_one_topic_does_not_stall_the_other(
        world: World, unique: str, with_joint: bool) -> None:
    settings, engine, effects, inbox, first, second = world
    own = settings.model_copy(update={"consumer_dlq_window": 20, "consumer_dlq_max_ratio": 0.5})
    calls: list[str] = []
    handler = recording_handler(engine, effects, inbox, calls)
    both = joint_handler(engine, effects, inbox, calls, []) if with_joint else None
    await produce(own, {first: [event("a1")] + [b"{broken" for _ in range(29)],
                        second: [event(f"b{i}") for i in range(3)]})
    producer = create_producer(own)
    await producer.start()
    specs = [ConsumerSpec(f"svc-{unique}.a", first, Event, handler, joint=both),
             ConsumerSpec(f"svc-{unique}.b", second, Event, handler, joint=both)]
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
