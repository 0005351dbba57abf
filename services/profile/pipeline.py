"""One polled batch of events or delivery outcomes -> profiles, history, outbox. One transaction.

Reads everything the batch needs in a handful of queries (conventions, tombstones, identities,
profiles, memberships), resolves and applies each message in memory in offset order, then
writes back in bulk: that is what keeps the consumer at thousands of events per second.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from services.profile import kpis_store, segment_store
from services.profile import repository as repo
from services.profile.domain.conventions import Conventions
from services.profile.domain.delivery import apply_delivery, event_name, event_properties
from services.profile.domain.identity import (
    Candidate,
    Identifier,
    identifier_hash,
    identifiers,
    lookup_only,
    resolve,
)
from services.profile.domain.lifecycle import lifecycle_stage
from services.profile.domain.snapshot import snapshot, snapshot_fields
from services.profile.domain.state import (
    Change,
    ProfileState,
    apply_event,
    iso,
    merge_into,
)
from services.profile.outbox_rows import (
    Outgoing,
    change_id,
    json_time,
    profile_change_json,
    profile_event_json,
    queue,
)
from shared.contracts.delivery import DeliveryEvent
from shared.contracts.envelope import message_key, utcnow
from shared.contracts.events import Event, EventType
from shared.contracts.storable import plausible_event_time
from shared.db.outbox import OutboxRow
from shared.settings import Settings


class _Published(NamedTuple):
    """A profile event to publish: the event and the profile as that event left it."""

    workspace_id: str
    event_id: str
    profile_id: str
    event: Event
    profile: dict[str, Any]  # snapshot_fields(); segments filled in at the end of the batch


@dataclass
class _Batch:
    now: datetime
    conventions: dict[str, Conventions]
    owners: dict[str, dict[Identifier, str]]  # workspace -> identifier -> profile id
    states: dict[str, ProfileState]
    new_identities: list[dict[str, str]] = field(default_factory=list)
    merges: list[tuple[str, str]] = field(default_factory=list)  # (loser, survivor)
    history: list[dict[str, Any]] = field(default_factory=list)
    published: list[_Published] = field(default_factory=list)  # profile-events, in order
    changes: list[tuple[str, str, str, Change]] = field(default_factory=list)  # ws, pid, id, c
    touched: dict[str, str] = field(default_factory=dict)  # profile id -> workspace
    merged_into: dict[str, str] = field(default_factory=dict)  # loser -> survivor, this batch
    produced: datetime = field(default_factory=utcnow)  # produced_at of the batch's messages
    kpi: kpis_store.KpiFacts = field(default_factory=kpis_store.KpiFacts)

    def live(self, pid: str) -> str:
        """Where rows queued for `pid` belong now (it may have been merged since)."""
        while pid in self.merged_into:
            pid = self.merged_into[pid]
        return pid


def _ids_of(item: Event | DeliveryEvent, conv: Conventions) -> list[Identifier]:
    # Event first: isinstance of the exact class is a fast path; a miss on a pydantic model
    # goes through ABCMeta.__instancecheck__ (4 % of the batch when tested per event).
    if isinstance(item, Event):
        return identifiers(item, conv.phone_region)
    return [("profile_id", item.profile_id)]


async def apply_batch(conn: AsyncConnection, items: list[Event | DeliveryEvent],
                      settings: Settings, now: datetime) -> list[OutboxRow]:
    """Apply fresh (already inbox-claimed) messages; returns the outbox rows to publish."""
    if not items:
        return []
    for item in items:  # a client-side time without a zone is read as UTC, never a crash;
        # one before 1970 or days ahead (an event published before ingest corrected it) is
        # read as its receipt time: year 1 or 9999 would be stored as -/+infinity.
        if isinstance(item, Event):
            item.timestamp = plausible_event_time(item.timestamp, item.received_at)
    convs = await repo.conventions_for(conn, {i.workspace_id for i in items})
    # Each message's identifiers, computed once: (claimable, lookup-only).
    idents = [(_ids_of(i, convs[i.workspace_id]),
               lookup_only(i) if isinstance(i, Event) else []) for i in items]
    wanted = {(item.workspace_id, k, v) for item, (ids, lookup) in zip(items, idents, strict=True)
              for k, v in ids + lookup}
    known = await repo.owners(conn, list(wanted))
    # Only an identifier nobody owns can be an erased one (erasure deletes the identities).
    hashes = {key: identifier_hash(key[0], (key[1], key[2])) for key in wanted - known.keys()}
    gone = await repo.erased(conn, [(key[0], h) for key, h in hashes.items()])
    batch = _Batch(now, convs, {}, await repo.lock_profiles(conn, known.values()))
    for (ws, kind, value), pid in known.items():
        batch.owners.setdefault(ws, {})[(kind, value)] = pid
    for item, (ids, lookup) in zip(items, idents, strict=True):
        ws = item.workspace_id
        if gone and any((ws, hashes.get((ws, k, v))) in gone for k, v in ids + lookup):
            continue  # an erased person: never re-created by late events or re-imports
        _apply_one(batch, item, ids, lookup)
    return await _write(conn, batch, settings)


def _apply_one(b: _Batch, item: Event | DeliveryEvent, ids: list[Identifier],
               lookup: list[Identifier]) -> None:
    ws = item.workspace_id
    conv = b.conventions[ws]
    owners = b.owners.setdefault(ws, {})
    # Owners may name a profile merged earlier in this batch: follow it to the survivor.
    view = {i: b.live(pid) for i in ids + lookup if (pid := owners.get(i)) is not None}
    found = set(view.values())
    # The first-seen key only orders two or more candidates: not formatted for a lone one.
    cands = {pid: Candidate(pid, b.states[pid].user_id,
                            iso(b.states[pid].first_seen_at) if len(found) > 1 else "")
             for pid in found}
    # Tested once: isinstance on a pydantic model goes through ABCMeta, not free per event.
    ev = item if isinstance(item, Event) else None
    if ev is None and not cands:
        return  # outcome for a profile that no longer exists (erased)
    explicit = ev is not None and ev.type is EventType.alias
    res = resolve(ws, ids, view, cands, lookup=lookup, explicit=explicit)
    if ev is not None:
        ts, event_id = ev.timestamp, ev.id
    else:
        assert isinstance(item, DeliveryEvent)
        ts, event_id = item.occurred_at, f"delivery:{item.id}"
    changes: list[Change] = []
    if res.created:
        b.states[res.profile_id] = ProfileState(res.profile_id, ws, ts, ts, created=True)
        res.claimed.append(("profile_id", res.profile_id))
        # No `created` change: the profile event that follows names the new profile id, and
        # half of all new (anonymous) profiles are merged away minutes later.
    p = b.states[res.profile_id]
    for loser in res.merged:
        merge_into(p, b.states.pop(loser))
        b.merges.append((loser, p.id))
        b.merged_into[loser] = p.id
        b.touched.pop(loser, None)
    if res.merged:
        changes.append(Change("merged", {"merged_ids": res.merged}))
    for ident in res.claimed:
        owners[ident] = p.id
        b.new_identities.append({"workspace_id": ws, "kind": ident[0], "value": ident[1],
                                 "profile_id": p.id})
    before_traits = dict(p.traits) if ev is not None and ev.traits else p.traits
    if ev is None:
        assert isinstance(item, DeliveryEvent)
        event = Event(id=event_id, workspace_id=ws, type=EventType.track,
                      event=event_name(item), properties=event_properties(item),
                      user_id=p.user_id, anonymous_id=None if p.user_id else p.id,
                      timestamp=ts, received_at=b.now)
        p.event_count += 1
        p.last_seen_at = max(p.last_seen_at, ts)
        changes += apply_delivery(p, item)
        b.kpi.note_delivery(p.id, item)
    else:
        event = ev
        changes += apply_event(p, ev, conv)
        b.kpi.note_event(p.id, ev, conv)
        renamed = [] if before_traits is p.traits else sorted(
            k for k in p.traits if before_traits.get(k, object()) != p.traits[k])
        if renamed and not res.created:
            changes.append(Change("traits_changed", {"traits": renamed}))
    stage = lifecycle_stage(order_count=p.order_count, first_order_at=p.first_order_at,
                            last_order_at=p.last_order_at, reactivated_at=p.reactivated_at,
                            now=b.now, conv=conv)
    if stage != p.lifecycle_stage:
        changes.append(Change("lifecycle_changed", {"from": p.lifecycle_stage, "to": stage}))
        p.lifecycle_stage = stage
    b.touched[p.id] = ws
    b.history.append({"workspace_id": ws, "event_id": event_id, "profile_id": p.id,
                      "type": event.type.value, "name": (event.event or event.name or "")[:200]
                      or None, "properties": event.properties, "timestamp": ts,
                      "received_at": event.received_at})
    b.published.append(_Published(ws, event_id, p.id, event, snapshot_fields(p, b.now, conv)))
    for n, change in enumerate(changes):
        b.changes.append((ws, p.id, change_id(event_id, change.kind, str(n)), change))


async def _write(conn: AsyncConnection, b: _Batch, settings: Settings) -> list[OutboxRow]:
    # Rows queued for a profile that a later message in this batch merged away follow it.
    for row in b.new_identities + b.history:
        row["profile_id"] = b.live(row["profile_id"])
    events, changes = settings.topic("profile-events"), settings.topic("profile-changes")
    produced, now = json_time(b.produced), json_time(b.now)
    # Memberships before this batch's evaluation (the writes below never touch them). The
    # profile events are encoded with them while Postgres works on the writes: the event loop
    # runs the encoder between round trips, so the two cores work at once. A profile the
    # evaluation then moves has its events encoded again below.
    current = await repo.memberships(conn, b.touched)
    encoder = asyncio.create_task(_encode_events(b.published, current, events, produced))
    try:
        await repo.repoint(conn, {loser: b.live(loser) for loser, _ in b.merges})
        await repo.claim_identities(conn, b.new_identities)
        await repo.save_profiles(conn, (b.states[pid] for pid in b.touched))
        await repo.add_history(conn, b.history)
        members = await _segments(conn, b, current)
        # The KPI rollups, in this same transaction (docs/metrics.md).
        await kpis_store.write(conn, b.kpi, b.conventions, b.live,
                               {loser: (b.states[b.live(loser)].workspace_id, b.live(loser))
                                for loser, _ in b.merges}, members,
                               [(ws, c.data["from"], c.data["to"]) for ws, _, _, c in b.changes
                                if c.kind == "lifecycle_changed"], b.now)
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
    rows += [Outgoing(changes, "profile-changes", message_key(ws, pid), cid, profile_change_json(
                 cid, ws, produced, pid, c.kind, c.data, now, finals.get(pid)))
             for ws, pid, cid, c in b.changes]
    return await queue(conn, rows)


def _event_row(m: _Published, members: dict[str, set[str]], topic: str,
               produced: str) -> tuple[Outgoing, bytes]:
    """The profile-events row, and its snapshot's JSON."""
    m.profile["segments"] = sorted(members.get(m.profile_id, ()))
    snap = orjson.dumps(m.profile)
    return Outgoing(topic, "profile-events", message_key(m.workspace_id, m.profile_id),
                    m.event_id, profile_event_json(m.event_id, m.workspace_id, produced,
                                                   m.profile_id, m.event, snap)), snap


async def _encode_events(published: list[_Published], members: dict[str, set[str]],
                         topic: str, produced: str) -> list[tuple[Outgoing, bytes]]:
    """_event_row for each message, a slice at a time, yielding to the event loop between."""
    rows: list[tuple[Outgoing, bytes]] = []
    for start in range(0, len(published), _SLICE):
        rows += [_event_row(m, members, topic, produced)
                 for m in published[start:start + _SLICE]]
        await asyncio.sleep(0)
    return rows


_SLICE = 50  # events encoded between two looks at the sockets (about half a millisecond)


async def _segments(conn: AsyncConnection, b: _Batch,
                    current: dict[str, set[str]]) -> dict[str, set[str]]:
    """Re-evaluate every segment for the touched profiles, whose memberships are `current`;
    memberships by profile id."""
    rules = await segment_store.rules_for(conn, set(b.touched.values()))
    members = dict(current)
    for ws in set(b.touched.values()):
        if not rules[ws]:
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
