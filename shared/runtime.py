"""What a service process runs besides HTTP: engine, producer, consumers, outbox sweeper.

Start-up never blocks on Postgres or Kafka: the app serves /healthz at once, connects
in the background with backoff, and /readyz says 503 until both answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aiokafka import AIOKafkaProducer
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import tracing
from shared.auth import KeyRing, seed_bootstrap_keys
from shared.db.engine import create_engine, ping
from shared.db.outbox import OutboxRelay, OutboxRow
from shared.kafka.consumer import ConsumerLoop, ConsumerSpec
from shared.kafka.producer import create_producer
from shared.settings import Settings

log = logging.getLogger(__name__)


class Worker(Protocol):
    """A background loop besides the consumers (journey's timer workers, profile's recompute
    schedule). `run` returns after `stop`; if it raises, the runtime restarts it with backoff."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...


class Stoppable:
    """A worker's stop signal: `stop` sets `_stopping`, which its `run` loop checks."""

    def __init__(self) -> None:
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()


@dataclass
class ServiceParts:
    """What makes one service: its tables and its consumer table."""

    name: str
    api_keys: Table
    outbox: Table | None = None
    seed_kinds: tuple[str, ...] = ("admin",)
    consumers: Callable[[ServiceRuntime], list[ConsumerSpec]] = lambda _rt: []
    workers: Callable[[ServiceRuntime], list[Worker]] = lambda _rt: []
    extras: dict[str, object] = field(default_factory=dict)


class ServiceRuntime:
    def __init__(self, parts: ServiceParts, settings: Settings) -> None:
        self.parts = parts
        self.settings = settings
        tracing.setup(parts.name)  # only if the OTEL_* variables ask
        self.engine: AsyncEngine = create_engine(settings.database_url)
        self.producer: AIOKafkaProducer = create_producer(settings, client_id=parts.name)
        self.keyring = KeyRing(self.engine, parts.api_keys)
        self.relay = (
            OutboxRelay(self.engine, parts.outbox, self.producer, service=parts.name)
            if parts.outbox is not None else None
        )
        self.loops: list[ConsumerLoop] = []
        self.workers: list[Worker] = []
        self.producer_started = False
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._connect(), name=f"{self.parts.name}-connect"))

    async def _connect(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                await ping(self.engine)
                await seed_bootstrap_keys(self.engine, self.parts.api_keys, self.settings,
                                          self.parts.seed_kinds)
                if not self.producer_started:
                    await self.producer.start()
                    self.producer_started = True
                break
            except Exception as exc:
                log.warning("%s: waiting for dependencies (%s)", self.parts.name,
                            type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
        if self._stopping.is_set():
            return
        if specs := self.parts.consumers(self):
            # One consumer (one group, `<prefix><service>`) for all the service's topics:
            # half the fetches and commits of a loop per topic (shared/kafka/consumer.py).
            loop = ConsumerLoop(specs, self.settings, self.producer, name=self.parts.name)
            self.loops.append(loop)
            self._tasks.append(asyncio.create_task(self._supervise(
                loop.run, f"consumer {loop.name} crashed; restarting from last commit"),
                name=loop.name))
        for worker in self.parts.workers(self):
            self.workers.append(worker)
            self._tasks.append(asyncio.create_task(self._supervise(
                worker.run, f"worker {type(worker).__name__} crashed; restarting"),
                name=type(worker).__name__))
        if self.relay is not None:
            self._tasks.append(asyncio.create_task(self.relay.run_sweeper(), name="outbox"))
        log.info("%s: connected, consumer for %d topic(s) running", self.parts.name,
                 sum(len(loop.specs) for loop in self.loops))

    async def _supervise(self, run: Callable[[], Awaitable[None]], crashed: str) -> None:
        """A crashed consumer loop or worker restarts (a loop from its last commit:
        at-least-once), with backoff; `crashed` is the log line."""
        delay = 1.0
        while not self._stopping.is_set():
            try:
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s", crashed)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)

    async def ready(self) -> dict[str, bool]:
        """Is each dependency reachable right now (bounded to ~1 s), and is no consumer halted
        (`consumer:<name>: false`, see ConsumerLoop.halted)?"""
        async def db() -> bool:
            try:
                await asyncio.wait_for(ping(self.engine), 1.0)
                return True
            except Exception:
                return False

        async def kafka() -> bool:
            if not self.producer_started:
                return False
            try:
                return bool(await asyncio.wait_for(
                    self.producer.client.force_metadata_update(), 1.0))
            except Exception:
                return False

        postgres, broker = await asyncio.gather(db(), kafka())
        checks = {"postgres": postgres, "kafka": broker}
        # A consumer halted by its DLQ ratio limit needs a restart (a bad deploy): say which.
        checks.update({f"consumer:{name}": False for loop in self.loops
                       for name in loop.halted_specs})
        return checks

    async def publish(self, rows: Sequence[OutboxRow]) -> None:
        """Publish outbox rows right after their commit; a failure (or a service without an
        outbox) leaves them to the sweeper."""
        if self.relay is not None and rows:
            await self.relay.publish(rows)

    def publish_soon(self, rows: Sequence[OutboxRow]) -> None:
        """`OutboxRelay.publish_soon`: in the background; without an outbox the rows wait."""
        if self.relay is not None:
            self.relay.publish_soon(rows)

    async def stop(self, timeout: float = 4.0) -> None:
        """Fits `up`'s 10 s budget together with uvicorn's 5 s request drain."""
        self._stopping.set()
        for loop in self.loops:
            loop.stop()
        for worker in self.workers:
            worker.stop()
        if self.relay is not None:
            self.relay.stop()
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self.relay is not None:  # what the stopped handlers committed, while we can
            try:  # bounded: an unreachable broker leaves the rows to the next sweeper
                await asyncio.wait_for(self.relay.drain(), 2.0)
            except TimeoutError:
                pass
        if self.producer_started:
            await self.producer.stop()
        if self.relay is not None:
            await self.relay.close()
        await self.engine.dispose()
