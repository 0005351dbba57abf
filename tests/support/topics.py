"""Read what landed on a topic, from the beginning, with a throwaway consumer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from shared.kafka.admin import ensure_topics
from shared.settings import Settings


async def read_until(bootstrap: str, topic: str, predicate: Callable[[list[ConsumerRecord]], bool],
                     timeout: float = 30.0) -> list[ConsumerRecord]:
    """Consume `topic` from the start until `predicate(all records so far)` holds."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=f"test-reader-{uuid.uuid4().hex}",
                                enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        return await _collect(consumer, topic, predicate, timeout)
    finally:
        await consumer.stop()


async def read_topic(bootstrap: str, topic: str,
                     predicate: Callable[[list[ConsumerRecord]], bool],
                     timeout: float = 30.0) -> list[ConsumerRecord]:
    """Like `read_until`, without a consumer group: no group join to wait for (seconds on
    Tansu). Every partition is read from the start."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=50)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # no public way to ask for it
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)
                      or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        return await _collect(consumer, topic, predicate, timeout)
    finally:
        await consumer.stop()


async def _collect(consumer: AIOKafkaConsumer, topic: str,
                   predicate: Callable[[list[ConsumerRecord]], bool],
                   timeout: float) -> list[ConsumerRecord]:
    seen: list[ConsumerRecord] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate(seen):
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{topic}: condition not met with {len(seen)} records")
        for batch in (await consumer.getmany(timeout_ms=200)).values():
            seen.extend(batch)
    return seen


async def with_own_topics(settings: Settings, label: str,
                          short_names: tuple[str, ...] = ("events",)) -> Settings:
    """`settings` with the topic prefix `<label>.`, those topics created: a test that owns
    its topics neither sees nor disturbs what other tests publish."""
    own = settings.model_copy(update={"topic_prefix": f"{label}."})
    await ensure_topics(own, [own.topic(name) for name in short_names])
    return own
