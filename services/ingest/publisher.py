"""Hand accepted events to the producer (acks=all) and keep track of their delivery."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from shared.contracts.envelope import message_key
from shared.kafka.codec import Headers, header_pairs, trace_headers
from shared.kafka.producer import partition_for


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One event, encoded for `touchpoint.events`."""

    id: str
    key: bytes
    value: bytes

    @classmethod
    def of(cls, document: dict[str, Any]) -> Outgoing:
        """From `domain.calls.event_document`; keyed `workspace_id:customer` like `Event`."""
        customer = document.get("user_id") or document.get("anonymous_id") or ""
        return cls(document["id"], message_key(document["workspace_id"], customer),
                   orjson.dumps(document, option=orjson.OPT_UTC_Z))

    @property
    def headers(self) -> Headers:
        return header_pairs("events", self.id)


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


async def enqueue(producer: AIOKafkaProducer, topic: str, events: list[Outgoing],
                  into: Sending) -> None:
    """Append each event to the producer.

    Futures land in `into` as they are made, so a caller that times this out still knows
    which events may reach the broker later.
    """
    partitions = sorted(await producer.partitions_for(topic))
    trace = trace_headers()  # [] unless tracing is on (shared/tracing.py)
    for event in events:
        future = await producer.send(topic, event.value, key=event.key,
                                     partition=partition_for(event.key, partitions),
                                     headers=event.headers + trace if trace else event.headers)
        into.parts.append((future, [event.id]))
