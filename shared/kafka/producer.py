"""The producer every service uses: acks=all, small linger, JSON values."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from pydantic import BaseModel

from shared.kafka.codec import encode, headers_for
from shared.settings import Settings


def create_producer(settings: Settings, *, client_id: str = "touchpoint") -> AIOKafkaProducer:
    """Not started; call `await producer.start()`.

    No idempotent producer and no transactions: Tansu has neither, and at-least-once
    with idempotent consumers is the design anyway.
    """
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=client_id,
        acks="all",
        linger_ms=settings.producer_linger_ms,
        enable_idempotence=False,
        request_timeout_ms=10_000,
        max_request_size=2 * 1024 * 1024,
        compression_type=None,
    )


async def publish(
    producer: AIOKafkaProducer,
    topic: str,
    messages: list[tuple[bytes, BaseModel]],
    *,
    topic_short: str,
    timeout: float = 10.0,
) -> None:
    """Send (key, message) pairs and wait until the broker acknowledged every one.

    The whole call is bounded by `timeout` (send() itself can block on metadata).
    """

    async def _send_all() -> None:
        futures = [
            await producer.send(topic, encode(msg), key=key, headers=headers_for(msg, topic_short))
            for key, msg in messages
        ]
        await asyncio.gather(*futures)

    await asyncio.wait_for(_send_all(), timeout)
