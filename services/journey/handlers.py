"""Journey's message handlers: profile events and changes move customers through journeys.

One transaction per polled batch: inbox claim, state changes, decisions and outbox rows
commit together; the outbox is published right after commit. A poll holding both topics'
records is one transaction too (`handle_poll`, the consumer loop's joint handler).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import and_, delete, select, update

from services.journey import store
from services.journey.domain.signals import Signal
from services.journey.policy.directory import revenue_names, zones
from services.journey.publisher import OutboxPublisher
from services.journey.tables import (
    broadcast_audience,
    decisions,
    inbox,
    instances,
    outbox,
    sends,
    snapshots,
)
from services.journey.unit import Unit, announce_timers
from shared.clock import Clock
from shared.contracts.profile import ChangeKind, ProfileChange, ProfileEvent
from shared.kafka import Record
from shared.runtime import ServiceRuntime

EVENTS, CHANGES = "journey.profile-events", "journey.profile-changes"  # consumer names


def event_signal(pe: ProfileEvent) -> Signal:
    event = pe.event.model_dump(mode="json")
    return Signal(id=pe.id, workspace_id=pe.workspace_id, profile_id=pe.profile_id, kind="event",
                  name=pe.event.event or pe.event.name or pe.event.type.value,
                  at=pe.event.timestamp,
                  data={"event": event, "profile": pe.profile.model_dump(mode="json")})


def change_signal(change: ProfileChange) -> Signal:
    profile = change.profile.model_dump(mode="json") if change.profile else {}
    return Signal(id=change.id, workspace_id=change.workspace_id, profile_id=change.profile_id,
                  kind="change", name=change.kind.value, at=change.occurred_at,
                  data={"profile": profile, "change": {"kind": change.kind.value,
                                                       "data": change.data}})


async def apply_signals(rt: ServiceRuntime, clock: Clock, docs: store.Documents,
                        publisher: OutboxPublisher | None, consumer: str, ids: list[str],
                        signals: list[Signal], before: Any = None) -> None:
    await apply_polled(rt, clock, docs, publisher, {consumer: (ids, signals)}, before)


async def apply_polled(rt: ServiceRuntime, clock: Clock, docs: store.Documents,
                       publisher: OutboxPublisher | None,
                       polled: dict[str, tuple[list[str], list[Signal]]],
                       before: Any = None) -> None:
    """Signals and their inbox ids by consumer (one poll's topics), in one transaction: one
    claim for all, then the fresh signals in `polled`'s order; `before(conn, todo)` may act
    on (and drop) some of them first."""
    signals = [s for _, theirs in polled.values() for s in theirs]
    async with rt.engine.begin() as conn:
        unit = Unit(conn, docs, rt.settings, outbox, clock.now())
        # The claim and the workspaces' policies, templates and live journeys: one statement.
        fresh = await unit.claim(inbox, {c: ids for c, (ids, _) in polled.items()},
                                 {s.workspace_id for s in signals})
        todo = []
        for consumer, (ids, theirs) in polled.items():
            mine = fresh[consumer]
            for signal, message_id in zip(theirs, ids, strict=True):
                if message_id in mine:  # a duplicate within the batch counts once too
                    mine.discard(message_id)
                    todo.append(signal)
        if before is not None:
            todo = await before(conn, todo)
        if not todo:
            return
        parts = getattr(rt, "parts", None)
        directory = parts.extras.get("directory") if parts else None
        unit.zones = await zones(directory, {s.workspace_id for s in todo})
        unit.revenue_names = await revenue_names(directory, {s.workspace_id for s in todo})
        # Snapshots first: a profile seen for the first time gets its control group
        # membership here, under the policy of that moment, and keeps it.
        unit.control.update(await store.save_snapshots(
            conn, {(s.workspace_id, s.profile_id): s.profile for s in todo if s.profile},
            unit.in_control))
        await unit.load_for_signals(todo)
        for signal in todo:
            unit.apply_signal(signal)
        ids_out = await unit.flush()
    announce_timers(unit)
    if publisher is not None:
        publisher.publish_soon(ids_out)


# A poll's profile events are applied in this many transactions at once, each over its own
# customers: while one waits on Postgres, the next computes (about half of a transaction's
# time is spent waiting on the database). Only from LANES_FROM events: a small poll's cost
# is its fixed round trips (about a dozen statements a transaction), which a second lane
# would double.
LANES = 2
LANES_FROM = 64


def by_customer(events: list[ProfileEvent], lanes: int) -> list[list[ProfileEvent]]:
    """Split `events` into at most `lanes` groups of about equal size such that each
    customer's events all land in one group, in their original order. Groups touch
    disjoint rows (instances, sends, snapshots are per customer; inbox ids are per event),
    so their transactions neither wait on nor deadlock with each other."""
    groups: list[list[ProfileEvent]] = [[] for _ in range(lanes)]
    lane_of: dict[tuple[str, str], list[ProfileEvent]] = {}
    for event in events:
        pair = (event.workspace_id, event.profile_id)
        group = lane_of.get(pair)
        if group is None:
            group = lane_of[pair] = min(groups, key=len)
        group.append(event)
    return [g for g in groups if g]


async def handle_profile_events(rt: ServiceRuntime, clock: Clock, docs: store.Documents,
                                publisher: OutboxPublisher | None, records: list[Record]
                                ) -> None:
    async def apply(events: list[ProfileEvent]) -> None:
        await apply_signals(rt, clock, docs, publisher, EVENTS,
                            [e.dedupe_id() for e in events], [event_signal(e) for e in events])

    groups = by_customer([r.value for r in records],
                         LANES if len(records) >= LANES_FROM else 1)
    # Every lane runs to its end before the handler returns (no lane is cancelled halfway),
    # and the first failure is raised as itself, so the consumer loop classifies it as usual
    # (an outage pauses, anything else replays the poll one record at a time; lanes that
    # committed are then skipped by the inbox). Offsets are committed only after all lanes.
    results = await asyncio.gather(*(apply(g) for g in groups), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def handle_poll(rt: ServiceRuntime, clock: Clock, docs: store.Documents,
                      publisher: OutboxPublisher | None, polled: dict[str, list[Record]]
                      ) -> None:
    """A poll of both topics (the consumer loop's joint handler): profile events, then
    profile changes, as signals of one transaction with one claim and one outbox publish.
    A poll with a merge or an erasure among its changes, or big enough for lanes, is
    handled topic by topic instead, events first (two transactions, in turn): a merge or an
    erasure must act on what the events before it left, and lanes split only events."""
    events = [r.value for r in polled.get(EVENTS, [])]
    changes: list[ProfileChange] = [r.value for r in polled.get(CHANGES, [])]
    if len(events) >= LANES_FROM or any(c.kind in _BOOKKEEPING for c in changes):
        if events:
            await handle_profile_events(rt, clock, docs, publisher, polled[EVENTS])
        if changes:
            await handle_profile_changes(rt, clock, docs, publisher, polled[CHANGES])
        return
    await apply_polled(rt, clock, docs, publisher, {
        EVENTS: ([e.dedupe_id() for e in events], [event_signal(e) for e in events]),
        CHANGES: ([c.dedupe_id() for c in changes], [change_signal(c) for c in changes])})


_BOOKKEEPING = (ChangeKind.merged, ChangeKind.erased)


async def handle_profile_changes(rt: ServiceRuntime, clock: Clock, docs: store.Documents,
                                 publisher: OutboxPublisher | None, records: list[Record]
                                 ) -> None:
    """Merges re-key journey state; erasure drops it; other kinds are signals for rules."""
    changes: list[ProfileChange] = [r.value for r in records]
    by_id = {c.id: c for c in changes}

    async def bookkeeping(conn: Any, todo: list[Signal]) -> list[Signal]:
        rest = []
        for signal in todo:
            change = by_id[signal.id]
            if change.kind is ChangeKind.merged:
                await merge(conn, change.workspace_id, change.profile_id,
                            [str(i) for i in change.data.get("merged_ids", [])])
            elif change.kind is ChangeKind.erased:
                await erase(conn, change.workspace_id, change.profile_id,
                            [str(i) for i in change.data.get("merged_ids") or []])
            else:
                rest.append(signal)
        return rest

    await apply_signals(rt, clock, docs, publisher, CHANGES,
                        [c.dedupe_id() for c in changes], [change_signal(c) for c in changes],
                        bookkeeping)


async def merge(conn: Any, workspace_id: str, into: str, merged: list[str]) -> None:
    """Move the merged profiles' journey state under `into`. Where both stand in the same
    journey instance, the surviving profile's instance wins and the other exits."""
    if not merged:
        return
    i = instances.c
    keep = select(i.journey_key, i.instance_key).where(
        i.workspace_id == workspace_id, i.profile_id == into, i.status == "active")
    taken = {(r.journey_key, r.instance_key) for r in (await conn.execute(keep)).all()}
    rows = (await conn.execute(select(i.id, i.journey_key, i.instance_key).where(
        i.workspace_id == workspace_id, i.profile_id.in_(merged), i.status == "active")
        .with_for_update())).all()
    clash = [r.id for r in rows if (r.journey_key, r.instance_key) in taken]
    seen: set[tuple[str, str]] = set()
    for r in rows:  # two merged profiles in the same instance: keep the first
        if r.id not in clash and (r.journey_key, r.instance_key) in seen:
            clash.append(r.id)
        seen.add((r.journey_key, r.instance_key))
    if clash:
        await conn.execute(update(instances).where(i.id.in_(clash)).values(
            status="exited", exit_reason=f"profile merged into {into}", wake_at=None,
            wake_kind=None))
    scope = and_(i.workspace_id == workspace_id, i.profile_id.in_(merged))
    await conn.execute(update(instances).where(scope).values(profile_id=into))
    for table in (decisions, sends):
        await conn.execute(update(table).where(
            table.c.workspace_id == workspace_id, table.c.profile_id.in_(merged))
            .values(profile_id=into))
    await conn.execute(delete(snapshots).where(
        snapshots.c.workspace_id == workspace_id, snapshots.c.profile_id.in_(merged)))


async def erase(conn: Any, workspace_id: str, profile_id: str,
                merged: list[str] | None = None) -> None:
    """Right to erasure: nothing journey keeps about the customer (the profile and the ids
    merged into it) survives. A broadcast's audience keeps its rows for the broadcast's
    counts, under an id that names nobody; a pending (deferred) one is suppressed."""
    person = list(dict.fromkeys([profile_id, *(merged or [])]))
    for table in (instances, decisions, sends, snapshots):
        await conn.execute(delete(table).where(table.c.workspace_id == workspace_id,
                                               table.c.profile_id.in_(person)))
    a = broadcast_audience.c
    rows = (await conn.execute(select(a.broadcast_key, a.profile_id, a.status).where(
        a.workspace_id == workspace_id, a.profile_id.in_(person)))).all()
    for row in rows:
        values: dict[str, Any] = {"profile_id": f"erased:{uuid.uuid4().hex[:29]}"}
        if row.status == "pending":
            values |= {"status": "suppressed", "reason": "erased", "held_since": None}
        await conn.execute(update(broadcast_audience).where(
            a.workspace_id == workspace_id, a.broadcast_key == row.broadcast_key,
            a.profile_id == row.profile_id).values(**values))
