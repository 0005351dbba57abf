"""Dead-letter queue: the original bytes, with where they came from and why in headers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer, ConsumerRecord

from shared.settings import Settings


async def dead_letter(
    producer: AIOKafkaProducer,
    settings: Settings,
    consumer_name: str,
    msg: ConsumerRecord,
    exc: BaseException,
) -> None:
    """Publish `msg` unchanged to the DLQ topic and wait for the broker's ack."""
    error = str(exc) or type(exc).__name__
    headers = [h for h in (msg.headers or ()) if not h[0].startswith("dlq.")]
    headers += [
        ("dlq.error", error[:2000].encode()),
        ("dlq.error-type", type(exc).__name__.encode()),
        ("dlq.consumer", consumer_name.encode()),
        ("dlq.topic", msg.topic.encode()),
        ("dlq.partition", str(msg.partition).encode()),
        ("dlq.offset", str(msg.offset).encode()),
        ("dlq.at", datetime.now(UTC).isoformat().encode()),
    ]
    future = await producer.send(settings.topic("dlq"), msg.value, key=msg.key, headers=headers)
    await asyncio.wait_for(future, 10)
