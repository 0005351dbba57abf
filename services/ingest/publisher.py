"""Hand accepted events to the producer (acks=all) and keep track of their delivery."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

from shared.contracts.envelope import message_key
from shared.contracts.events import Event
from shared.kafka.codec import encode, headers_for


@dataclass
class Sending:
    """The delivery futures of one request, each with the message ids it covers."""

    parts: list[tuple[asyncio.Future[Any], list[str]]] = field(default_factory=list)

    @property
    def futures(self) -> list[asyncio.Future[Any]]:
        return [future for future, _ in self.parts]

    def delivered(self) -> set[str]:
        """Ids the broker has acknowledged so far."""
        return {message_id for future, ids in self.parts
                if future.done() and not future.cancelled() and future.exception() is None
                for message_id in ids}


async def enqueue(producer: AIOKafkaProducer, topic: str, events: list[Event],
                  into: Sending) -> None:
    """Append each event to the producer, keyed `workspace_id:customer`.

    Futures land in `into` as they are made, so a caller that times this out still knows
    which events may reach the broker later.
    """
    for event in events:
        future = await producer.send(topic, encode(event),
                                     key=message_key(event.workspace_id, event.customer),
                                     headers=headers_for(event, "events"))
        into.parts.append((future, [event.id]))
