"""Group commit of the send path's state transitions, and how an outcome is recorded.

A send worker, before each provider call, hands the ledger the outcome of its previous call
(if any) and the id of the message it is about to send. The ledger writes everything handed
in meanwhile at once, atomically: the outcomes with their delivery events and the
`queued|retrying -> sending` mark of the next messages (one statement of data-modifying
CTEs, outside a transaction, unless an outcome marks an address undeliverable or gives a
discount code back: then a transaction of a few). While it commits, new hand-ins
collect for the next flush, so the number of transactions follows the database's pace, not
the number of messages: a wave of 64 messages costs a few flushes, not 64 round trips.

What this buys: a message is marked `sending` only once it holds a slot of its route
(`Route.slots`: the provider's connection pool, 8 for SMTP by default), and keeps the slot
until its outcome is durable (recorded with the same worker's next mark, or on its own). So
at most the route's pool size of messages is `sending` at any moment, whatever
`messaging_concurrency` and the waves in flight: a worker that waits for a connection holds
no mark. A crash leaves exactly those `unknown`; every message not yet marked is still
`queued` (or `retrying`) and is sent after the restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson

from services.messaging.codes import release_unsent
from services.messaging.delivery import pace, route_of, send
from services.messaging.delivery_events import outcome_events
from services.messaging.message import Outcome, Prepared, verdict_outcome
from services.messaging.metrics import SENDS
from services.messaging.parts import Messaging
from services.messaging.store import (
    Driver,
    emit,
    mark_undeliverable,
    one_statement,
    transaction,
)
from services.messaging.store.outbox import arrays
from services.messaging.store.sends import (
    OUTCOME_COLUMNS,
    mark_sending,
    record_and_mark,
    record_outcomes,
)
from shared.db.outbox import OutboxRow
from shared.kafka.errors import is_transient
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)
A = TypeVar("A")
B = TypeVar("B")

# How long a flush waits for more hand-ins while some send workers are still busy (their
# provider call, or a wait for a connection of the pool): a few ms of each message's latency
# buys flushes of many messages instead of one or two.
LINGER_S = 0.01
KEEP_COMMAND = frozenset({"retrying", "failed", "unknown"})  # may still be (re)sent


class Ledger:
    def __init__(self, rt: ServiceRuntime, m: Messaging) -> None:
        self.rt, self.m = rt, m
        self._outcomes: list[Outcome] = []
        self._marks: list[str] = []
        self._waiters: list[tuple[asyncio.Future[bool], str | None]] = []
        self._flushing: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()
        self.active = 0  # send workers running (see `running`)
        self.flushes = 0

    def running(self, delta: int) -> None:
        """A send worker started (+1) or finished (-1): a flush waits for the busy ones."""
        self.active += delta
        self._arrived.set()

    async def step(self, done: list[Outcome], mark: str | None) -> bool:
        """Record `done` and mark `mark` (a message id) `sending`, durably, together with
        whatever other workers handed in meanwhile. True when `mark` is now this worker's to
        send (False: another worker took it, e.g. after a rebalance)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._outcomes += done
        if mark is not None:
            self._marks.append(mark)
        self._waiters.append((future, mark))
        self._arrived.set()
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush_all(), name="messaging-ledger")
        return await future

    async def _flush_all(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0)  # every worker ready now joins the first flush
        while self._waiters:
            deadline = loop.time() + LINGER_S
            while len(self._waiters) < self.active and (left := deadline - loop.time()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except TimeoutError:
                    break
            outcomes, self._outcomes = self._outcomes, []
            marks, self._marks = self._marks, []
            waiters, self._waiters = self._waiters, []
            try:
                marked, rows = await self._flush(outcomes, marks)
            except BaseException as exc:
                for future, _ in waiters:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            self.flushes += 1
            for future, mark in waiters:
                if not future.done():
                    future.set_result(mark is None or mark in marked)
            self.rt.publish_soon(rows)

    async def _flush(self, outcomes: list[Outcome], marks: list[str]
                     ) -> tuple[set[str], list[Any]]:
        """One transaction. A database outage is waited out for a while: the outcomes are
        of messages that went out, their record must not be lost."""
        delay = 0.2
        stamp = datetime.now(UTC)  # the same on every retry: see `mark_sending`
        while True:
            try:
                if any(o.dead or o.prepared.codes for o in outcomes):
                    async with transaction(self.rt.engine) as db:
                        rows = await record(db, self.rt, outcomes)
                        await release_unsent(db, outcomes)  # codes of messages never sent
                        marked = await mark_sending(db, marks, stamp)
                else:  # the usual flush: one statement, no BEGIN and COMMIT around it
                    async with one_statement(self.rt.engine) as db:
                        now = datetime.now(UTC)
                        marked, rows = await record_and_mark(
                            db, outcome_columns(outcomes, now),
                            arrays(self.rt.settings,
                                   [e for o in outcomes for e in outcome_events(o, now)]),
                            marks, stamp)
                for o in outcomes:  # committed: counted once
                    SENDS.labels(o.prepared.cmd.channel.value, o.status).inc()
                return marked, rows
            except Exception as exc:
                if not is_transient(exc) or delay > 30:
                    raise
                log.warning("recording message outcomes: database unavailable, retrying")
                await asyncio.sleep(delay)
                delay *= 2


async def record(db: Driver, rt: ServiceRuntime, outcomes: list[Outcome]) -> list[OutboxRow]:
    """Outcomes, their delivery events and undeliverable addresses, in the caller's
    transaction. Returns the outbox rows written."""
    if not outcomes:
        return []
    now = datetime.now(UTC)
    events = [e for o in outcomes for e in outcome_events(o, now)]
    await record_outcomes(db, outcome_columns(outcomes, now))
    for o in outcomes:
        if o.dead:
            cmd = o.prepared.cmd
            await mark_undeliverable(
                db, workspace_id=cmd.workspace_id, channel=cmd.channel.value,
                addresses=[a for a, _ in o.dead], reason=o.dead[0][1])
    return await emit(db, rt.settings, events)


def outcome_columns(outcomes: list[Outcome], now: datetime) -> list[list[Any]]:
    """The outcomes as `record_outcomes` takes them: one list per column."""
    columns: list[list[Any]] = [[] for _ in range(OUTCOME_COLUMNS)]
    for o in outcomes:
        content = o.prepared.content if o.status in ("sent", "bounced") else None
        row = (o.prepared.message_id, o.status, o.reason, o.provider, o.provider_id,
               now if o.status == "sent" else None,
               orjson.dumps(content).decode() if content else None,
               content["subject"] if content else None,
               (content.get("text") or content.get("body") or content["html"])
               if content else None,
               o.retry_at, o.retry_since,
               o.prepared.cmd.model_dump_json() if o.status in KEEP_COMMAND else None)
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


async def send_all(rt: ServiceRuntime, m: Messaging, ledger: Ledger, prepared: list[Prepared],
                   *, attempts: int) -> None:
    """Send `prepared` (customers concurrently, one customer's messages in order). A message
    is marked `sending` only once it holds a slot of its route (`Route.slots`, the provider's
    connection pool), and its outcome is recorded with the same worker's next mark (same
    route, no rate-limit wait) or on its own before the slot is let go: a message is `sending`
    only while it holds a slot. Refused and expired messages are recorded at once."""
    now = datetime.now(UTC)
    done = [verdict_outcome(p) for p in prepared if p.verdict]
    live: list[Prepared] = []
    for p in prepared:
        if p.verdict:
            continue
        if p.cmd.expires_at is not None and p.cmd.expires_at <= now:
            done.append(Outcome(p, "expired", reason="expired before it could be sent"))
        else:
            live.append(p)
    if done:
        await ledger.step(done, None)
    groups: dict[str, list[Prepared]] = {}
    for p in live:
        groups.setdefault(f"{p.cmd.workspace_id}:{p.cmd.profile_id}", []).append(p)
    routes = {p.message_id: await route_of(rt, m, p) for p in live}  # cached lookups
    # No more workers than slots: a worker keeps its slot from customer to customer, each
    # outcome recorded with its next mark, instead of every worker taking a customer and
    # then waiting for a slot (a flush per message on each side of every call).
    pools = {id(r.slots): r.pool for r in routes.values() if r is not None}
    workers = min(m.settings.messaging_concurrency,
                  sum(pools.values()) or m.settings.messaging_concurrency)
    # Per send worker (its task): the outcome of its last call, not yet recorded, and the
    # slot that message still holds.
    held: dict[object, tuple[list[Outcome], asyncio.Semaphore | None]] = {}

    async def settle(outcomes: list[Outcome], slot: asyncio.Semaphore | None) -> None:
        """Record `outcomes`, then let their slot go."""
        try:
            if outcomes:
                await ledger.step(outcomes, None)
        finally:
            if slot is not None:
                slot.release()

    async def idle() -> None:
        await settle(*held.pop(asyncio.current_task(), ([], None)))

    async def one(p: Prepared) -> None:
        wait = await pace(rt, m, p)  # a rate limit is waited for before the mark
        route = routes[p.message_id]
        want = route.slots if route is not None else None
        done, slot = held.pop(asyncio.current_task(), ([], None))
        if done and (wait or slot is not want):  # the last outcome can't ride on this mark
            await settle(done, slot)
            done, slot = [], None
        if wait:
            await asyncio.sleep(wait)
        if slot is None and want is not None:
            await _acquire(want, ledger)
            slot = want
        try:
            marked = await ledger.step(done, p.message_id)
            outcome = await send(rt, m, p, attempts=attempts, paced=wait is not None) \
                if marked else None
        except BaseException:
            if slot is not None:
                slot.release()
            raise
        if outcome is None:  # another worker has it (rebalance)
            if slot is not None:
                slot.release()
            return
        held[asyncio.current_task()] = ([outcome], slot)

    await per_customer(list(groups.values()), workers, one, running=ledger.running, idle=idle)


async def _acquire(slot: asyncio.Semaphore, ledger: Ledger) -> None:
    """Take a slot; a worker waiting for one is not counted busy meanwhile (a flush need
    not linger for a hand-in that cannot come before a slot is let go)."""
    if not slot.locked():
        await slot.acquire()
        return
    ledger.running(-1)
    try:
        await slot.acquire()
    finally:
        ledger.running(1)


async def per_customer(groups: list[list[A]], limit: int, call: Callable[[A], Awaitable[B]], *,
                       running: Callable[[int], None] = lambda _delta: None,
                       idle: Callable[[], Awaitable[None]] | None = None) -> list[B]:
    """`call` on every item, customers concurrently (at most `limit` at a time), each
    customer's items one after the other, in order; results in the groups' order. Workers
    take whole customers, so one customer is never on two workers at once: fewer tasks than
    a task per customer behind a semaphore, and no semaphore. Raises the first failure once
    every worker stopped. `running(+1|-1)` is told when a worker starts and ends; `idle()`
    runs in a worker's task when it has no more work (or failed), before it ends."""
    results: list[list[B]] = [[] for _ in groups]
    todo = deque(zip(groups, results, strict=True))

    async def worker() -> None:
        running(1)
        try:
            while todo:
                items, done = todo.popleft()
                for item in items:
                    done.append(await call(item))
        finally:
            try:
                if idle is not None:
                    await idle()
            finally:
                running(-1)

    outcomes = await asyncio.gather(*(worker() for _ in range(min(limit, len(groups)))),
                                    return_exceptions=True)
    if failure := next((r for r in outcomes if isinstance(r, BaseException)), None):
        raise failure
    return [r for rs in results for r in rs]
