"""Dead-letter queue: the original bytes, with where they came from and why in headers;
reading it back (filtered) and replaying records to the topic they came from."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from shared.kafka.error_text import error_text
from shared.settings import Settings


async def dead_letter(
    producer: AIOKafkaProducer,
    settings: Settings,
    consumer_name: str,
    msg: ConsumerRecord,
    exc: BaseException,
) -> None:
    """Publish `msg` unchanged to the DLQ topic and wait for the broker's ack."""
    error = error_text(exc)  # the type and where, never a value of the record
    headers = [h for h in (msg.headers or ()) if not h[0].startswith("dlq.")]
    headers += [
        ("dlq.error", error.encode()),
        ("dlq.error-type", type(exc).__name__.encode()),
        ("dlq.consumer", consumer_name.encode()),
        ("dlq.topic", msg.topic.encode()),
        ("dlq.partition", str(msg.partition).encode()),
        ("dlq.offset", str(msg.offset).encode()),
        ("dlq.at", datetime.now(UTC).isoformat().encode()),
    ]
    future = await producer.send(settings.topic("dlq"), msg.value, key=msg.key, headers=headers)
    await asyncio.wait_for(future, 10)


@dataclass(frozen=True)
class DeadLetter:
    """One DLQ record: where it sits in the DLQ, where it came from, and why."""

    partition: int
    offset: int
    consumer: str
    topic: str  # the topic it was read from (where a replay sends it)
    source_partition: int | None
    source_offset: int | None
    error: str
    error_type: str
    at: datetime | None
    workspace_id: str | None  # from the value, when it is JSON with one
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


def _text(headers: dict[str, bytes], name: str) -> str:
    return headers.get(name, b"").decode(errors="replace")


def _int(value: str) -> int | None:
    return int(value) if value.isdigit() else None


def parse_dead_letter(record: ConsumerRecord) -> DeadLetter:
    headers = dict(record.headers or ())
    try:
        at: datetime | None = datetime.fromisoformat(_text(headers, "dlq.at"))
    except ValueError:
        at = None
    workspace: str | None = None
    try:
        body = orjson.loads(record.value or b"")
        if isinstance(body, dict) and isinstance(body.get("workspace_id"), str):
            workspace = body["workspace_id"]
    except orjson.JSONDecodeError:
        pass
    return DeadLetter(record.partition, record.offset, _text(headers, "dlq.consumer"),
                      _text(headers, "dlq.topic"), _int(_text(headers, "dlq.partition")),
                      _int(_text(headers, "dlq.offset")), _text(headers, "dlq.error"),
                      _text(headers, "dlq.error-type"), at, workspace, record.key,
                      record.value, tuple(record.headers or ()))


async def read_dead_letters(settings: Settings, match: Callable[[DeadLetter], bool], *,
                            limit: int, timeout: float = 10.0) -> list[DeadLetter]:
    """The DLQ topic from its start to its end as of now (no consumer group: nothing is
    committed, nothing waits for a join), the first `limit` records that `match`."""
    topic = settings.topic("dlq")
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    found: list[DeadLetter] = []
    try:
        await consumer._client.force_metadata_update()  # no public way to ask for it
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)
                      or ()]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        todo = {tp for tp in partitions if ends[tp] > 0}
        deadline = asyncio.get_running_loop().time() + timeout
        while todo and len(found) < limit:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("reading the DLQ took too long")
            batches = await consumer.getmany(*todo, timeout_ms=200)
            for tp, records in batches.items():
                for record in records:
                    if record.offset < ends[tp]:
                        letter = parse_dead_letter(record)
                        if match(letter) and len(found) < limit:
                            found.append(letter)
                if records and records[-1].offset + 1 >= ends[tp]:
                    todo.discard(tp)
    finally:
        await consumer.stop()
    return sorted(found, key=lambda d: (d.at or datetime.min.replace(tzinfo=UTC), d.offset))


async def replay(producer: AIOKafkaProducer, letters: list[DeadLetter]) -> int:
    """Publish each record again, unchanged, to the topic it was read from (every consumer
    of that topic sees it again: handlers are idempotent), with `dlq.replayed-from`
    naming the DLQ record. Waits for every ack."""
    futures = []
    for d in letters:
        if not d.topic:
            continue
        headers = [h for h in d.headers if not h[0].startswith("dlq.")]
        headers.append(("dlq.replayed-from", f"{d.partition}:{d.offset}".encode()))
        futures.append(await producer.send(d.topic, d.value, key=d.key, headers=headers))
    for future in futures:
        await asyncio.wait_for(future, 10)
    return len(futures)
