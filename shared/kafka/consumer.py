"""The consumer loop: commit only after the effect is durable, never block a partition.

Per poll, the records of every partition are parsed with the topic's contract model;
ones that don't parse go to the DLQ. The rest go to the handler as one batch, partition
after partition in offset order (so one key's records stay in order, and handlers batch
their database writes over the whole poll: one transaction per poll, not per partition).
If the batch fails for a reason other than an outage, it is replayed one record at a time
to find the poison one. Offsets (last offset + 1 of each partition) are committed in one
request, only after the handler returned.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from pydantic import BaseModel, ValidationError

from shared import metrics
from shared.kafka.dlq import dead_letter
from shared.kafka.errors import InvalidMessage, is_transient
from shared.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    """A parsed message and where it came from."""

    value: Any  # the contract model instance
    topic: str
    partition: int
    offset: int
    key: bytes | None
    raw: ConsumerRecord = field(repr=False)


Handler = Callable[[list[Record]], Awaitable[None]]


@dataclass(frozen=True)
class ConsumerSpec:
    """One row of a service's consumer table."""

    name: str  # e.g. "profile.events"; also the consumer-group suffix and inbox name
    topic: str  # full topic name
    model: type[BaseModel]
    handler: Handler
    max_attempts: int = 3  # for non-transient handler errors, before dead-lettering


class _Abandon(Exception):
    """The batch can't be finished here (shutdown or partition revoked): don't commit."""


class DeadLetterRatio:
    """The share of the last `window` records that went to the DLQ. Above `max_ratio` (once
    at least a fifth of the window was seen) the consumer halts: most of its input failing
    is a bad deploy or a bad upstream, not a few poison records, and dead-lettering it all
    would empty the topic into the DLQ."""

    def __init__(self, max_ratio: float, window: int) -> None:
        self.max_ratio, self.window = max_ratio, window
        self._seen: deque[bool] = deque(maxlen=window)

    def add(self, good: int, dead: int) -> None:
        self._seen.extend([True] * dead + [False] * good)

    @property
    def ratio(self) -> float:
        return sum(self._seen) / len(self._seen) if self._seen else 0.0

    def exceeded(self) -> bool:
        return len(self._seen) >= max(1, self.window // 5) and self.ratio > self.max_ratio


class ConsumerLoop:
    def __init__(self, spec: ConsumerSpec, settings: Settings, producer: AIOKafkaProducer) -> None:
        self.spec = spec
        self.settings = settings
        self.producer = producer  # for the DLQ
        self.group = f"{settings.topic_prefix}{spec.name}"
        self._stopping = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self.running = False
        self.dead_ratio = DeadLetterRatio(settings.consumer_dlq_max_ratio,
                                          settings.consumer_dlq_window)
        self._dead_in_poll = 0
        self.halted: str | None = None  # why it stopped committing (the DLQ ratio limit)

    def stop(self) -> None:
        """Ask the loop to finish its current batch, commit and leave the group."""
        self._stopping.set()

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            self.spec.topic,
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.group,
            client_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self.settings.consumer_fetch_max_wait_ms,
            max_poll_interval_ms=600_000,
            session_timeout_ms=self.settings.consumer_session_timeout_ms,
            rebalance_timeout_ms=self.settings.consumer_session_timeout_ms,
            heartbeat_interval_ms=max(self.settings.consumer_session_timeout_ms // 10, 300),
            group_instance_id=(f"{self.settings.consumer_instance_id}/{self.spec.name}"
                               if self.settings.consumer_instance_id else None),
        )
        self._consumer = consumer
        await self._start(consumer)
        self.running = True
        try:
            while not self._stopping.is_set():
                batches = await consumer.getmany(
                    timeout_ms=200, max_records=self.settings.consumer_max_records
                )
                if not batches or self._stopping.is_set():
                    continue
                try:
                    await self._process(consumer, batches)
                except _Abandon:
                    continue
                if self.halted:
                    await self._halt(consumer)
        finally:
            self.running = False
            await consumer.stop()

    async def _start(self, consumer: AIOKafkaConsumer) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                await consumer.start()
                return
            except KafkaError as exc:
                log.warning("consumer %s: broker unreachable (%s), retrying", self.group, exc)
                await self._sleep(delay)
                delay = min(delay * 2, 10)
        raise asyncio.CancelledError

    async def _halt(self, consumer: AIOKafkaConsumer) -> None:
        """Hold the partitions without reading or committing until the process restarts:
        the group keeps them here (heartbeats go on), so another replica running the same
        code does not dead-letter them either."""
        log.error("consumer %s: halted: %s; not committing, /readyz is 503 until a restart",
                  self.group, self.halted)
        metrics.PAUSED.labels(self.spec.name).set(1)
        while not self._stopping.is_set():
            consumer.pause(*consumer.assignment())
            await consumer.getmany(timeout_ms=500)

    async def _process(
        self, consumer: AIOKafkaConsumer, batches: dict[TopicPartition, list[ConsumerRecord]]
    ) -> None:
        self._dead_in_poll = 0
        records: list[Record] = []
        for messages in batches.values():
            for msg in messages:
                try:
                    records.append(self._parse(msg))
                except UnknownVariant as exc:
                    # A newer producer's addition (a status, kind or type this reader does not
                    # know yet): skipped and counted, never dead-lettered.
                    metrics.SKIPPED_UNKNOWN.labels(self.spec.name, exc.field).inc()
                except InvalidMessage as exc:
                    await self._dead_letter(consumer, msg, exc)
        if records:
            with metrics.HANDLER_SECONDS.labels(self.spec.name).time():
                await self._handle(consumer, records)
        size = sum(len(m) for m in batches.values())
        self.dead_ratio.add(size - self._dead_in_poll, self._dead_in_poll)
        if self.dead_ratio.exceeded():
            self.halted = (f"dead-lettered {self.dead_ratio.ratio:.0%} of the last "
                           f"{self.dead_ratio.window} records (limit "
                           f"{self.dead_ratio.max_ratio:.0%})")
            return  # not committed: the records are read again after the restart
        committed = {tp: msgs[-1].offset + 1 for tp, msgs in batches.items()}
        await self._commit(consumer, committed)
        metrics.CONSUMED.labels(self.spec.name).inc(size)
        metrics.BATCH_RECORDS.labels(self.spec.name).observe(size)
        for tp, position in committed.items():
            # The high watermark comes with each fetch response: no extra request.
            if (end := consumer.highwater(tp)) is not None:
                metrics.LAG.labels(self.spec.name, str(tp.partition)).set(max(end - position, 0))

    def _parse(self, msg: ConsumerRecord) -> Record:
        try:
            value = self.spec.model.model_validate_json(msg.value or b"")
        except ValidationError as exc:
            if field := _unknown_variant(exc):
                raise UnknownVariant(field) from exc
            raise InvalidMessage(_short(exc)) from exc
        return Record(value, msg.topic, msg.partition, msg.offset, msg.key, msg)

    async def _handle(self, consumer: AIOKafkaConsumer, records: list[Record]) -> None:
        try:
            await self._handle_until_done(consumer, records)
        finally:
            metrics.PAUSED.labels(self.spec.name).set(0)

    async def _handle_until_done(self, consumer: AIOKafkaConsumer, records: list[Record]) -> None:
        attempt = 0
        delay = 0.2
        while True:
            try:
                await self.spec.handler(records)
                return
            except InvalidMessage as exc:
                if len(records) > 1:
                    return await self._one_by_one(consumer, records)
                return await self._dead_letter(consumer, records[0].raw, exc)
            except Exception as exc:
                if is_transient(exc):
                    # An outage: wait it out without leaving the group, then retry.
                    log.warning("consumer %s: dependency down (%s), pausing", self.group,
                                type(exc).__name__)
                    metrics.PAUSED.labels(self.spec.name).set(1)
                    await self._pause_for(consumer, _partitions(records), delay)
                    delay = min(delay * 2, 15)
                    continue
                if len(records) > 1:
                    return await self._one_by_one(consumer, records)
                attempt += 1
                if attempt >= self.spec.max_attempts:
                    log.exception("consumer %s: giving up on offset %s", self.group,
                                  records[0].offset)
                    return await self._dead_letter(consumer, records[0].raw, exc)
                await self._sleep(delay * attempt)

    async def _one_by_one(self, consumer: AIOKafkaConsumer, records: list[Record]) -> None:
        for record in records:
            await self._handle(consumer, [record])

    async def _pause_for(
        self, consumer: AIOKafkaConsumer, partitions: set[TopicPartition], delay: float
    ) -> None:
        """Sleep with jitter while keeping group membership; abandon if stopping or revoked."""
        assigned = consumer.assignment()
        consumer.pause(*assigned)
        try:
            # getmany on paused partitions returns nothing but keeps the poll interval alive.
            await consumer.getmany(timeout_ms=int(delay * (0.8 + 0.4 * random.random()) * 1000))
        finally:
            current = consumer.assignment()
            consumer.resume(*[p for p in assigned if p in current])
        if self._stopping.is_set() or not partitions <= consumer.assignment():
            raise _Abandon

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        delay = 0.2
        while True:
            try:
                await consumer.commit(offsets)
                return
            except (CommitFailedError, IllegalStateError) as exc:
                # Rebalanced away: the new owner re-reads from the last commit (idempotent).
                log.warning("consumer %s: commit lost to a rebalance (%s)", self.group, exc)
                raise _Abandon from exc
            except KafkaError as exc:
                log.warning("consumer %s: commit failed (%s), retrying", self.group, exc)
                if self._stopping.is_set():
                    raise _Abandon from exc
                await self._sleep(delay)
                delay = min(delay * 2, 10)

    async def _dead_letter(
        self,
        consumer: AIOKafkaConsumer,
        msg: ConsumerRecord,
        exc: BaseException,
    ) -> None:
        delay = 0.2
        while True:
            try:
                await dead_letter(self.producer, self.settings, self.spec.name, msg, exc)
                metrics.DEAD_LETTERED.labels(self.spec.name).inc()
                self._dead_in_poll += 1
                return
            except KafkaError:
                await self._pause_for(consumer, {TopicPartition(msg.topic, msg.partition)}, delay)
                delay = min(delay * 2, 15)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass


# Top-level discriminating fields whose value set grows within a contract version.
_VARIANT_FIELDS = frozenset({"status", "kind", "type"})


class UnknownVariant(Exception):
    """The message is valid but for a value of `field` this reader does not know yet."""

    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


def _unknown_variant(exc: ValidationError) -> str | None:
    """The field's dotted path when the only error is an unknown enum value of a variant field
    (top level, or inside a nested object such as profile-events' `event.type`)."""
    errors = exc.errors()
    if len(errors) != 1 or errors[0]["type"] not in ("enum", "literal_error"):
        return None
    loc = errors[0]["loc"]
    if loc and str(loc[-1]) in _VARIANT_FIELDS and all(isinstance(p, str) for p in loc):
        return ".".join(str(p) for p in loc)
    return None


def _short(exc: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()]
    return "; ".join(parts)[:1000]


def _partitions(records: list[Record]) -> set[TopicPartition]:
    return {TopicPartition(r.topic, r.partition) for r in records}
