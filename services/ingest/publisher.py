"""Put accepted events on `touchpoint.events` and wait for the broker's acks (acks=all)."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from shared.contracts.envelope import message_key
from shared.contracts.events import Event
from shared.kafka.producer import publish


async def publish_events(producer: AIOKafkaProducer, topic: str, events: list[Event], *,
                         timeout: float) -> None:
    """Keyed `workspace_id:customer`; raises if any event is not acked within `timeout`."""
    await publish(producer, topic, [(message_key(e.workspace_id, e.customer), e) for e in events],
                  topic_short="events", timeout=timeout)
