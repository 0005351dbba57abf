"""Hand accepted events to the producer (acks=all) and keep track of their delivery."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder

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


# A request's events for one customer and partition up to this size go as one batch
# (the producer's max_request_size is 2 MiB; a request body is at most 500 KiB).
TOGETHER_MAX_BYTES = 1024 * 1024


async def enqueue(producer: AIOKafkaProducer, topic: str, events: list[Outgoing],
                  into: Sending) -> None:
    """Hand the events to the producer. Futures land in `into` as they are made, so a
    caller that times this out still knows which events may reach the broker later.

    The events of a customer with several in the request (an identify and a track, say)
    go as one record batch per partition of their own, so the broker takes all of them or
    none. Appended one by one they could straddle two of the producer's batches (a batch
    fills up while the broker is away); those expire independently, the later one could be
    delivered after the earlier one failed, and the retry would put the identify behind
    the track. (Such a batch waits until the partition's queued batches are on their way:
    while the broker is away that is the publish timeout, and a 503.) A customer's single
    event shares the producer's batches with other requests' events, as before.
    """
    partitions = sorted(await producer.partitions_for(topic))
    trace = trace_headers()  # [] unless tracing is on (shared/tracing.py)
    per_key = Counter(event.key for event in events)
    together: dict[int, list[Outgoing]] = {}
    for event in events:
        partition = partition_for(event.key, partitions)
        if per_key[event.key] > 1:
            together.setdefault(partition, []).append(event)
            continue
        future = await producer.send(topic, event.value, key=event.key, partition=partition,
                                     headers=event.headers + trace if trace else event.headers)
        into.parts.append((future, [event.id]))
    for partition, group in together.items():
        records = [(e.key, e.value, e.headers + trace if trace else e.headers) for e in group]
        size = sum(len(k) + len(v) + sum(len(n) + len(x) for n, x in h) + 64
                   for k, v, h in records) + 1024
        if size > TOGETHER_MAX_BYTES:  # beyond a produce request: one by one, as before
            for event, (key, value, headers) in zip(group, records, strict=True):
                future = await producer.send(topic, value, key=key, partition=partition,
                                             headers=headers)
                into.parts.append((future, [event.id]))
            continue
        batch = BatchBuilder(size, 0)  # sized for the whole group: it never splits; 0: raw
        for key, value, headers in records:
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                raise RuntimeError("a request's events outgrew their record batch")
        future = await producer.send_batch(batch, topic, partition=partition)
        into.parts.append((future, [e.id for e in group]))
