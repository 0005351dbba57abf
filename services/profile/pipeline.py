"""One polled batch of events or delivery outcomes -> profiles, history, outbox. One transaction.

Reads everything the batch needs in a handful of queries (conventions and segment rules with
the inbox claim, then owners, tombstones and the profiles locked, orders stored before),
resolves and applies each message in memory in offset order, then writes back in bulk
(identities, profiles and history in one statement, which also reads the memberships): that
is what keeps the consumer at thousands of events per second, and a small batch at few round
trips (docs/performance.md, "Cost per poll").
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from services.profile import batch_reads, kpis_store, segment_store
from services.profile import repository as repo
from services.profile.batch_reads import Reads
from services.profile.domain.batch import Batch, Published, apply_item, ids_of
from services.profile.domain.change_ids import change_id
from services.profile.domain.identity import (
    identifier_hash,
    lookup_only,
)
from services.profile.domain.orders import OrderBook, order_of
from services.profile.domain.segments import Rule
from services.profile.domain.snapshot import snapshot
from services.profile.domain.state import (
    iso,
)
from services.profile.tables import outbox
from shared.contracts.delivery import DeliveryEvent
from shared.contracts.envelope import json_time, message_key
from shared.contracts.events import Event
from shared.contracts.profile import profile_change_json, profile_event_json
from shared.contracts.storable import plausible_event_time
from shared.db.outbox import OutboxRow, Pending, queue
from shared.settings import Settings


async def apply_batch(conn: AsyncConnection, items: list[Event | DeliveryEvent],
                      settings: Settings, now: datetime, reads: Reads | None = None
                      ) -> list[OutboxRow]:
    """Apply fresh (already inbox-claimed) messages; returns the outbox rows to publish.
    `reads`: the conventions and segment rules of (at least) the items' workspaces, as the
    handler's inbox claim read them (batch_reads.claim_and_read); read here when not given."""
    if not items:
        return []
    for item in items:  # a client-side time without a zone is read as UTC, never a crash;
        # one before 1970 or days ahead (an event published before ingest corrected it) is
        # read as its receipt time: year 1 or 9999 would be stored as -/+infinity.
        if isinstance(item, Event):
            item.timestamp = plausible_event_time(item.timestamp, item.received_at)
    if reads is None:
        reads = await batch_reads.read(conn, {i.workspace_id for i in items})
    convs = reads.conventions
    # Each message's identifiers, computed once: (claimable, lookup-only).
    idents = [(ids_of(i, convs[i.workspace_id]),
               lookup_only(i) if isinstance(i, Event) else []) for i in items]
    wanted = {(item.workspace_id, k, v): "" for item, (ids, lookup)
              in zip(items, idents, strict=True) for k, v in ids + lookup}
    for ident in wanted:  # what an erasure's tombstone keeps of the identifier
        wanted[ident] = identifier_hash(ident[0], (ident[1], ident[2]))
    known, gone, states = await repo.owners(conn, wanted)
    # Which of the batch's orders were stored before: those never count again (orders.py).
    # With them, under the rebuild lock, the reporting segments the KPI rollups need.
    prior = await kpis_store.known_orders(conn, {
        (i.workspace_id, key) for i in items
        if isinstance(i, Event) and (key := order_of(i, convs[i.workspace_id])) is not None},
        convs)
    batch = Batch(now, convs, {}, states, orders=OrderBook(prior.stored))
    for (ws, kind, value), pid in known.items():
        batch.owners.setdefault(ws, {})[(kind, value)] = pid
    for item, (ids, lookup) in zip(items, idents, strict=True):
        ws = item.workspace_id
        if gone and any((ws, k, v) in gone for k, v in ids + lookup):
            continue  # an erased person: never re-created by late events or re-imports
        apply_item(batch, item, ids, lookup)
    return await _write(conn, batch, settings, reads.rules, prior.reporting)


async def _write(conn: AsyncConnection, b: Batch, settings: Settings,
                 rules: dict[str, dict[str, Rule]], reporting: dict[str, set[str]] | None
                 ) -> list[OutboxRow]:
    # Rows queued for a profile that a later message in this batch merged away follow it.
    for row in b.new_identities + b.history:
        row["profile_id"] = b.live(row["profile_id"])
    events, changes = settings.topic("profile-events"), settings.topic("profile-changes")
    produced, now = json_time(b.produced), json_time(b.now)
    # Memberships before this batch's evaluation (the writes never touch them), read by the
    # writes' statement: after the profiles' locks, and no round trip of their own. A profile
    # this batch created has none (its id is new): only the others are asked for. The
    # profile events are encoded with them while Postgres works on the statements that
    # follow: the event loop runs the encoder between round trips, so the two cores work at
    # once. A profile the evaluation then moves has its events encoded again below.
    await repo.repoint(conn, {loser: b.live(loser) for loser, _ in b.merges})
    current = await repo.write(conn, b.new_identities, [b.states[pid] for pid in b.touched],
                               b.history, [pid for pid in b.touched if not b.states[pid].created])
    current.update((pid, set()) for pid in b.touched if b.states[pid].created)
    encoder = asyncio.create_task(_encode_events(b.published, current, events, produced))
    try:
        members = await _segments(conn, b, current, rules)
        # The KPI rollups, in this same transaction (docs/metrics.md).
        await kpis_store.write(conn, b.kpi, b.conventions, b.live,
                               {loser: (b.states[b.live(loser)].workspace_id, b.live(loser))
                                for loser, _ in b.merges}, members,
                               [(ws, c.data["from"], c.data["to"]) for ws, _, _, c in b.changes
                                if c.kind == "lifecycle_changed"], b.now,
                               counted=b.orders.counted, reporting=reporting)
        encoded = await encoder
    finally:
        encoder.cancel()  # a no-op once it is done; stops it when a write failed
    moved = {pid for pid, keys in members.items() if keys != current.get(pid)}
    if moved:
        encoded = [_event_row(m, members, events, produced) if m.profile_id in moved else done
                   for m, done in zip(b.published, encoded, strict=True)]
    rows = [row for row, _ in encoded]
    # A profile's last snapshot is the profile as the batch leaves it: its changes carry it.
    finals = {m.profile_id: snap for m, (_, snap) in zip(b.published, encoded, strict=True)}
    rows += [Pending("profile-changes", message_key(ws, pid), cid, profile_change_json(
                 cid, ws, produced, pid, c.kind, c.data, now, finals.get(pid)), changes)
             for ws, pid, cid, c in b.changes]
    return await queue(conn, outbox, rows)


def _event_row(m: Published, members: dict[str, set[str]], topic: str,
               produced: str) -> tuple[Pending, bytes]:
    """The profile-events row, and its snapshot's JSON."""
    m.profile["segments"] = sorted(members.get(m.profile_id, ()))
    snap = orjson.dumps(m.profile)
    return Pending("profile-events", message_key(m.workspace_id, m.profile_id), m.event_id,
                   profile_event_json(m.event_id, m.workspace_id, produced, m.profile_id,
                                      m.event, snap), topic), snap


async def _encode_events(published: list[Published], members: dict[str, set[str]],
                         topic: str, produced: str) -> list[tuple[Pending, bytes]]:
    """_event_row for each message, a slice at a time, yielding to the event loop between."""
    rows: list[tuple[Pending, bytes]] = []
    for start in range(0, len(published), _SLICE):
        rows += [_event_row(m, members, topic, produced)
                 for m in published[start:start + _SLICE]]
        await asyncio.sleep(0)
    return rows


_SLICE = 50  # events encoded between two looks at the sockets (about half a millisecond)


async def _segments(conn: AsyncConnection, b: Batch, current: dict[str, set[str]],
                    rules: dict[str, dict[str, Rule]]) -> dict[str, set[str]]:
    """Re-evaluate every segment (`rules`, by workspace) for the touched profiles, whose
    memberships are `current`; memberships by profile id."""
    members = dict(current)
    for ws in set(b.touched.values()):
        if not rules.get(ws):
            continue
        conv = b.conventions[ws]
        pids = [pid for pid, w in b.touched.items() if w == ws]
        views = {pid: snapshot(b.states[pid], [], b.now, conv).model_dump() for pid in pids}
        moves = await segment_store.evaluate(conn, ws, rules[ws], views, current, b.now)
        for pid, change in moves.changes:
            b.changes.append((ws, pid, change_id("seg", iso(b.now), pid, change.kind,
                                                 change.data["segment"]), change))
        members.update(moves.members)
    return members
