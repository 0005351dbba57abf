"""Read what landed on a topic, from the beginning, with a throwaway consumer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord


async def read_until(bootstrap: str, topic: str, predicate: Callable[[list[ConsumerRecord]], bool],
                     timeout: float = 30.0) -> list[ConsumerRecord]:
    """Consume `topic` from the start until `predicate(all records so far)` holds."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=f"test-reader-{uuid.uuid4().hex}",
                                enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    seen: list[ConsumerRecord] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate(seen):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{topic}: condition not met with {len(seen)} records")
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                seen.extend(batch)
        return seen
    finally:
        await consumer.stop()
