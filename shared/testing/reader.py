"""Read a whole topic from the start, without a consumer group."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition


async def read_topic(bootstrap: str, topic: str,
                     predicate: Callable[[list[ConsumerRecord]], bool],
                     timeout: float = 30.0) -> list[ConsumerRecord]:
    """Read every partition from the start until `predicate` holds. No consumer group, so
    no group join to wait for (several seconds on Tansu)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=50)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)
                      or await _partitions(consumer, topic)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen: list[ConsumerRecord] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate(seen):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{topic}: condition not met with {len(seen)} records")
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                seen.extend(batch)
        return seen
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()  # no public way to ask for it
    return consumer.partitions_for_topic(topic) or set()
