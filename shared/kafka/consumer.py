"""The consumer loop: commit only after the effect is durable, never block a partition.

Per poll, the records of every partition are parsed with the topic's contract model;
ones that don't parse go to the DLQ. The rest go to the handler as one batch, partition
after partition in offset order (so one key's records stay in order, and handlers batch
their database writes over the whole poll: one transaction per poll, not per partition).
If the batch fails for a reason other than an outage, it is replayed one record at a time
to find the poison one. A poll holding records of two topics whose specs share a `joint`
handler goes to it in one call (one transaction for both topics); if that fails for a
reason other than an outage, each topic's own handler takes its records as above, so a
poison record of one topic costs the other nothing. Offsets (last offset + 1 of each
partition) are committed only after the handlers returned, in one request for every poll
of the last `COMMIT_EVERY_S` (and at once when the records stop, before a rebalance takes
partitions away, and at stop): one commit per poll was a broker round trip on every poll.
A crash can redeliver up to that much more, which the inbox (or the handler's idempotency
key) absorbs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from pydantic import BaseModel, ValidationError

from shared import metrics, tracing
from shared.faults import crash_point
from shared.kafka.dlq import dead_letter
from shared.kafka.error_text import validation_text
from shared.kafka.errors import InvalidMessage, is_transient
from shared.kafka.fetch_wait import FetchWait
from shared.kafka.group_offsets import StartFromLegacyGroups
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
# A poll's records of several topics, by spec name, handled together (one transaction).
JointHandler = Callable[[dict[str, list[Record]]], Awaitable[None]]


@dataclass(frozen=True)
class ConsumerSpec:
    """One row of a service's consumer table.

    `joint`: a handler the loop calls instead of `handler` when one poll holds records of
    this topic and of another whose spec names the same `joint` (the same object): one
    call with the records by spec name, which applies them in one transaction (one inbox
    claim, one outbox publish) instead of one per topic. It must be equivalent to calling
    each spec's `handler` in turn; if it fails for a reason other than an outage, the
    loop falls back to the per-topic handlers (which replay a poison record one by one),
    so one topic's poison never holds the other topic's records back."""

    name: str  # e.g. "profile.events"; also the consumer-group suffix and inbox name
    topic: str  # full topic name
    model: type[BaseModel]
    handler: Handler
    max_attempts: int = 3  # for non-transient handler errors, before dead-lettering
    joint: JointHandler | None = field(default=None, compare=False)


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
    """One consumer group over one or more topics, each with its spec (model, handler, DLQ).

    A service runs one loop for all its topics (`name` = the service: group
    `<prefix><service>`), which halves the fetches and commits of two loops. A poll holding
    records of several topics whose specs share a `joint` handler goes to it in one call
    (one transaction); otherwise each topic's records go to their topic's handler (the
    handlers of one poll run concurrently, as two loops did). Then one commit covers every
    partition. A partition the group never
    committed starts where the per-topic group it replaces (`<prefix><spec name>`) left off
    (shared/kafka/group_offsets.py). A loop built from a single spec keeps that spec's name
    as its group.
    """

    COMMIT_EVERY_S = 0.2  # at most one offset commit this often while records flow
    FLOWING_S = 0.1  # polls with records this close together: a small one lingers

    def __init__(self, specs: ConsumerSpec | Sequence[ConsumerSpec], settings: Settings,
                 producer: AIOKafkaProducer, *, name: str | None = None) -> None:
        self.specs = [specs] if isinstance(specs, ConsumerSpec) else list(specs)
        if not self.specs or len({s.topic for s in self.specs}) != len(self.specs):
            raise ValueError("a consumer loop needs specs for distinct topics")
        self.spec = self.specs[0]
        self.name = name or self.spec.name
        self.settings = settings
        self.producer = producer  # for the DLQ
        self.group = f"{settings.topic_prefix}{self.name}"
        self._by_topic = {s.topic: s for s in self.specs}
        # The groups this one replaces, per topic (none when a spec's name is the group's).
        self.legacy = {s.topic: f"{settings.topic_prefix}{s.name}" for s in self.specs
                       if s.name != self.name}
        self._stopping = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self.running = False
        # Per topic: its DLQ ratio limit, and why it stopped committing when it hit it.
        self.dead_ratio = {s.name: DeadLetterRatio(settings.consumer_dlq_max_ratio,
                                                   settings.consumer_dlq_window)
                           for s in self.specs}
        self._dead_in_poll: dict[str, int] = {}
        self.halted_specs: dict[str, str] = {}
        self._unsent: dict[TopicPartition, int] = {}  # handled, offsets not committed yet
        self._committed_at = 0.0
        self._records_at = -math.inf  # when the last poll with records came

    @property
    def halted(self) -> str | None:
        """Why a topic of this loop stopped committing (its DLQ ratio limit), if one did."""
        return "; ".join(f"{name}: {why}" for name, why in self.halted_specs.items()) or None

    def stop(self) -> None:
        """Ask the loop to finish its current batch, commit and leave the group."""
        self._stopping.set()

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
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
            group_instance_id=(f"{self.settings.consumer_instance_id}/{self.name}"
                               if self.settings.consumer_instance_id else None),
        )
        listener = StartFromLegacyGroups(self.settings.kafka_bootstrap, self.group, self.legacy,
                                         lambda: self._consumer, self._before_revoke)
        consumer.subscribe(list(self._by_topic), listener=listener)
        self._consumer = consumer
        await self._start(consumer)
        self.running = True
        wait = FetchWait(consumer, self.settings)
        try:
            while not self._stopping.is_set():
                batches = await consumer.getmany(
                    timeout_ms=200, max_records=self.settings.consumer_max_records
                )
                if listener.failed is not None:
                    raise listener.failed  # nothing handled: the restart asks again
                wait.polled(bool(batches))
                if not batches and self._unsent:
                    await self._flush_commits(consumer)  # the records stopped: commit now
                if not batches or self._stopping.is_set():
                    continue
                await self._linger(consumer, batches)
                if listener.failed is not None:
                    raise listener.failed
                try:
                    await self._process(consumer, batches)
                except _Abandon:
                    continue
                if self.halted_specs:
                    self._hold_halted(consumer)
            await self._flush_commits(consumer)
        finally:
            self.running = False
            await consumer.stop()

    async def _linger(self, consumer: AIOKafkaConsumer,
                      batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Add to a small poll what arrives within `consumer_linger_ms` (until it holds
        `consumer_linger_records`). A poll's fixed cost (the handler's transaction, its
        outbox publish, the fetch) dominates at low rates; a fuller one costs less CPU per
        record for a bounded wait. Only while records flow (the previous poll with records
        came less than `FLOWING_S` before): the first record after a quiet spell goes at
        once, so a quiet stack pays no linger. Records of a partition stay in offset
        order: a later getmany continues where the earlier one stopped."""
        now = time.monotonic()
        flowing, self._records_at = now - self._records_at <= self.FLOWING_S, now
        size = sum(len(m) for m in batches.values())
        want = min(self.settings.consumer_linger_records, self.settings.consumer_max_records)
        if not flowing or size >= want or self.settings.consumer_linger_ms <= 0:
            return  # a lone record after a quiet spell has nothing to wait for
        deadline = time.monotonic() + self.settings.consumer_linger_ms / 1000
        while size < want and not self._stopping.is_set():
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                return
            more = await consumer.getmany(timeout_ms=left_ms, max_records=want - size)
            for tp, messages in more.items():
                held = batches.setdefault(tp, [])
                if held:  # after a rebalance the partition may restart behind what we hold
                    messages = [m for m in messages if m.offset > held[-1].offset]
                held.extend(messages)
                size += len(messages)

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

    def _hold_halted(self, consumer: AIOKafkaConsumer) -> None:
        """Keep the halted topics' partitions paused (a rebalance resumes what it assigns):
        held without reading or committing until the process restarts, while the group
        keeps them here (heartbeats go on), so another replica running the same code does
        not dead-letter them either. The service's other topic keeps flowing."""
        halted = {s.topic for s in self.specs if s.name in self.halted_specs}
        consumer.pause(*[tp for tp in consumer.assignment() if tp.topic in halted])

    async def _process(
        self, consumer: AIOKafkaConsumer, batches: dict[TopicPartition, list[ConsumerRecord]]
    ) -> None:
        per_topic: dict[str, dict[TopicPartition, list[ConsumerRecord]]] = {}
        for tp, messages in batches.items():
            if self._by_topic[tp.topic].name not in self.halted_specs:  # fetched before
                per_topic.setdefault(tp.topic, {})[tp] = messages  # the pause: not handled
        if len(per_topic) == 1:  # most polls: no tasks to make
            topic, part = next(iter(per_topic.items()))
            await self._process_topic(consumer, self._by_topic[topic], part)
        elif len({id(self._by_topic[t].joint) for t in per_topic}) == 1 \
                and self._by_topic[next(iter(per_topic))].joint is not None:
            await self._process_joint(consumer, per_topic)
        elif per_topic:
            done = await asyncio.gather(
                *(self._process_topic(consumer, self._by_topic[topic], part)
                  for topic, part in per_topic.items()), return_exceptions=True)
            if failure := next((d for d in done if isinstance(d, BaseException)), None):
                raise failure  # nothing committed: the other topic's batch is redelivered
        # A topic that just hit its DLQ ratio limit is not committed: its records are read
        # again after the restart. The other topic's are.
        committed = {tp: msgs[-1].offset + 1 for topic, part in per_topic.items()
                     if self._by_topic[topic].name not in self.halted_specs
                     for tp, msgs in part.items()}
        if committed:
            crash_point("before_offset_commit")  # test-only (shared/faults.py)
            self._unsent.update(committed)
            if time.monotonic() - self._committed_at >= self.COMMIT_EVERY_S:
                await self._flush_commits(consumer)
        for tp, position in committed.items():
            # The high watermark comes with each fetch response: no extra request.
            if (end := consumer.highwater(tp)) is not None:
                metrics.LAG.labels(self._by_topic[tp.topic].name,
                                   str(tp.partition)).set(max(end - position, 0))

    async def _process_topic(
        self, consumer: AIOKafkaConsumer, spec: ConsumerSpec,
        batches: dict[TopicPartition, list[ConsumerRecord]],
    ) -> None:
        if records := await self._parse_all(consumer, spec, batches):
            await self._process_parsed(consumer, spec, records)
        self._account(spec, batches)

    async def _process_joint(
        self, consumer: AIOKafkaConsumer,
        per_topic: dict[str, dict[TopicPartition, list[ConsumerRecord]]],
    ) -> None:
        """A poll of several topics with one joint handler: parsed (and dead-lettered) per
        topic as always, then handled in one call; each topic is accounted as its own."""
        specs = [spec for spec in self.specs if spec.topic in per_topic]  # table order
        parsed = {spec.name: await self._parse_all(consumer, spec, per_topic[spec.topic])
                  for spec in specs}
        live = [spec for spec in specs if parsed[spec.name]]
        if len(live) == 1:  # the other topic's records all went to the DLQ
            await self._process_parsed(consumer, live[0], parsed[live[0].name])
        elif live:
            records = {spec.name: parsed[spec.name] for spec in live}
            name = "+".join(records)
            with metrics.HANDLER_SECONDS.labels(name).time():
                if tracing.enabled():  # named after the first topic's, whose trace it
                    every = [r for rs in records.values() for r in rs]  # continues
                    with self._span(live[0].name, ",".join(s.topic for s in live), every):
                        await self._handle_joint(consumer, live, records)
                else:
                    await self._handle_joint(consumer, live, records)
        for spec in specs:
            self._account(spec, per_topic[spec.topic])

    async def _process_parsed(self, consumer: AIOKafkaConsumer, spec: ConsumerSpec,
                              records: list[Record]) -> None:
        with metrics.HANDLER_SECONDS.labels(spec.name).time():
            if tracing.enabled():
                with self._span(spec.name, spec.topic, records):
                    await self._handle(consumer, spec, records)
            else:
                await self._handle(consumer, spec, records)

    def _span(self, name: str, topic: str, records: list[Record]) -> Any:
        """The batch's span: child of its first record's trace, linked to the others'; the
        handler's outbox rows carry it on."""
        return tracing.span(f"{name} process", self.name, kind="consumer",
                            parent=records[0].raw.headers,
                            links=[r.raw.headers for r in records[1:]],
                            attributes={"messaging.system": "kafka",
                                        "messaging.destination.name": topic,
                                        "messaging.batch.message_count": len(records)})

    async def _handle_joint(self, consumer: AIOKafkaConsumer, specs: list[ConsumerSpec],
                            records: dict[str, list[Record]]) -> None:
        """The joint handler until it succeeds, pausing through an outage like `_handle`.
        Any other failure falls back to each topic's own handler (concurrently, as without
        a joint handler): a poison record is then found and dead-lettered by its topic's
        replay, while the other topic's records are applied in their own transaction. The
        joint transaction rolled back, so nothing is applied twice."""
        joint = specs[0].joint
        assert joint is not None
        delay = 0.2
        try:
            while True:
                try:
                    await joint(records)
                    return
                except Exception as exc:
                    if not is_transient(exc):
                        log.warning("consumer %s: the joint batch of %s failed (%s); "
                                    "handling each topic on its own", self.group,
                                    "+".join(records), type(exc).__name__)
                        break
                    log.warning("consumer %s: dependency down (%s), pausing", self.group,
                                type(exc).__name__)
                    for spec in specs:
                        metrics.PAUSED.labels(spec.name).set(1)
                    await self._pause_for(
                        consumer, {p for rs in records.values() for p in _partitions(rs)}, delay)
                    delay = min(delay * 2, 15)
        finally:
            for spec in specs:
                metrics.PAUSED.labels(spec.name).set(0)
        done = await asyncio.gather(*(self._handle(consumer, spec, records[spec.name])
                                      for spec in specs), return_exceptions=True)
        if failure := next((d for d in done if isinstance(d, BaseException)), None):
            raise failure  # nothing committed: the poll is redelivered

    async def _parse_all(self, consumer: AIOKafkaConsumer, spec: ConsumerSpec,
                         batches: dict[TopicPartition, list[ConsumerRecord]]) -> list[Record]:
        """The records that parse, partition after partition in offset order; the others
        go to the DLQ (counted for the topic's DLQ ratio)."""
        self._dead_in_poll[spec.name] = 0
        records: list[Record] = []
        for messages in batches.values():
            for msg in messages:
                try:
                    records.append(self._parse(spec, msg))
                except UnknownVariant as exc:
                    # A newer producer's addition (a status, kind or type this reader does not
                    # know yet): skipped and counted, never dead-lettered.
                    metrics.SKIPPED_UNKNOWN.labels(spec.name, exc.field).inc()
                except InvalidMessage as exc:
                    await self._dead_letter(consumer, spec, msg, exc)
        return records

    def _account(self, spec: ConsumerSpec,
                 batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """The topic's DLQ ratio (halting it past the limit) and its metrics for the poll."""
        size = sum(len(m) for m in batches.values())
        dead = self._dead_in_poll[spec.name]
        ratio = self.dead_ratio[spec.name]
        ratio.add(size - dead, dead)
        if ratio.exceeded():
            self.halted_specs[spec.name] = (
                f"dead-lettered {ratio.ratio:.0%} of the last {ratio.window} records "
                f"(limit {ratio.max_ratio:.0%})")
            log.error("consumer %s: %s halted: %s; not committing it, /readyz is 503 until a "
                      "restart", self.group, spec.name, self.halted_specs[spec.name])
            metrics.PAUSED.labels(spec.name).set(1)
            return
        metrics.CONSUMED.labels(spec.name).inc(size)
        metrics.BATCH_RECORDS.labels(spec.name).observe(size)


    def _parse(self, spec: ConsumerSpec, msg: ConsumerRecord) -> Record:
        try:
            value = spec.model.model_validate_json(msg.value or b"")
        except ValidationError as exc:
            if field := _unknown_variant(exc):
                raise UnknownVariant(field) from exc
            raise InvalidMessage(validation_text(exc)) from exc
        return Record(value, msg.topic, msg.partition, msg.offset, msg.key, msg)

    async def _handle(self, consumer: AIOKafkaConsumer, spec: ConsumerSpec,
                      records: list[Record]) -> None:
        try:
            await self._handle_until_done(consumer, spec, records)
        finally:
            metrics.PAUSED.labels(spec.name).set(0)

    async def _handle_until_done(self, consumer: AIOKafkaConsumer, spec: ConsumerSpec,
                                 records: list[Record]) -> None:
        attempt = 0
        delay = 0.2
        while True:
            try:
                await spec.handler(records)
                return
            except InvalidMessage as exc:
                if len(records) > 1:
                    return await self._one_by_one(consumer, spec, records)
                return await self._dead_letter(consumer, spec, records[0].raw, exc)
            except Exception as exc:
                if is_transient(exc):
                    # An outage: wait it out without leaving the group, then retry.
                    log.warning("consumer %s: dependency down (%s), pausing", spec.name,
                                type(exc).__name__)
                    metrics.PAUSED.labels(spec.name).set(1)
                    await self._pause_for(consumer, _partitions(records), delay)
                    delay = min(delay * 2, 15)
                    continue
                if len(records) > 1:
                    return await self._one_by_one(consumer, spec, records)
                attempt += 1
                if attempt >= spec.max_attempts:
                    log.exception("consumer %s: giving up on offset %s", spec.name,
                                  records[0].offset)
                    return await self._dead_letter(consumer, spec, records[0].raw, exc)
                await self._sleep(delay * attempt)

    async def _one_by_one(self, consumer: AIOKafkaConsumer, spec: ConsumerSpec,
                          records: list[Record]) -> None:
        for record in records:
            await self._handle(consumer, spec, [record])

    async def _pause_for(
        self, consumer: AIOKafkaConsumer, partitions: set[TopicPartition], delay: float
    ) -> None:
        """Sleep with jitter while keeping group membership; abandon if stopping or revoked.

        Only `partitions` are paused: another topic's handler running beside this one keeps
        its own. The sleep itself is a plain wait; the group's heartbeats run on their own
        task, and the poll interval (10 min) is far longer than any backoff here."""
        assigned = partitions & consumer.assignment()
        consumer.pause(*assigned)
        try:
            await self._sleep(delay * (0.8 + 0.4 * random.random()))
        finally:
            current = consumer.assignment()
            consumer.resume(*[p for p in assigned if p in current])
        if self._stopping.is_set() or not partitions <= consumer.assignment():
            raise _Abandon

    async def _flush_commits(self, consumer: AIOKafkaConsumer,
                             only: set[TopicPartition] | None = None) -> None:
        """Commit the handled offsets not committed yet (of `only` these partitions). Lost to
        a rebalance: dropped, the new owner re-reads them (the inbox absorbs it)."""
        todo = {tp: offset for tp, offset in self._unsent.items() if only is None or tp in only}
        if not todo:
            return
        for tp in todo:
            del self._unsent[tp]
        self._committed_at = time.monotonic()
        try:
            await self._commit(consumer, todo)
        except _Abandon:
            pass

    async def _before_revoke(self, revoked: set[TopicPartition]) -> None:
        consumer = self._consumer
        if consumer is not None:
            await self._flush_commits(consumer, revoked)

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
        spec: ConsumerSpec,
        msg: ConsumerRecord,
        exc: BaseException,
    ) -> None:
        delay = 0.2
        while True:
            try:
                await dead_letter(self.producer, self.settings, spec.name, msg, exc)
                metrics.DEAD_LETTERED.labels(spec.name).inc()
                self._dead_in_poll[spec.name] = self._dead_in_poll.get(spec.name, 0) + 1
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


def _partitions(records: list[Record]) -> set[TopicPartition]:
    return {TopicPartition(r.topic, r.partition) for r in records}
