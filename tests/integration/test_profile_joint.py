"""Profile's joint handler on real Postgres and Tansu: a poll of events and delivery outcomes.

- both topics' records of one poll are claimed and applied in ONE transaction (their inbox
  rows and their history rows share a transaction id), published once after the commit
- a redelivered joint poll (the offsets were not committed) applies nothing twice
- the joint poll does what the two topics' handlers do one after the other
- a record seen by one topic's handler and again in a joint poll is not applied twice
- a poll returns without waiting for the broker's acks (its rows handed to the relay's
  `publish_soon`, durable in the outbox meanwhile); polls handled while a produce is in
  flight go out together in the next one, and each key's rows reach the topic in order
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text

from services.profile import tables
from services.profile.handlers import DELIVERY, EVENTS, handle_poll
from shared.contracts.delivery import DeliveryEvent
from shared.contracts.events import Event
from shared.contracts.profile import ProfileEvent
from shared.db.outbox import OutboxRow
from shared.kafka import Record
from shared.kafka.admin import ensure_topics
from shared.runtime import ServiceParts, ServiceRuntime
from shared.settings import Settings
from tests.support.topics import read_topic

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 2, tzinfo=UTC)


class Runtime(ServiceRuntime):
    """Profile's runtime with the hand-over after commit recorded (and still done)."""

    published: list[list[OutboxRow]]

    def publish_soon(self, rows: Sequence[OutboxRow]) -> None:
        self.published.append(list(rows))
        super().publish_soon(rows)


@pytest.fixture
async def rt(settings: Settings) -> AsyncIterator[Runtime]:
    own = settings.model_copy(update={"topic_prefix": f"test-joint-{uuid.uuid4().hex[:8]}."})
    await ensure_topics(own)
    runtime = Runtime(ServiceParts("profile", tables.api_keys, outbox=tables.outbox), own)
    runtime.published = []
    await runtime.producer.start()
    runtime.producer_started = True
    try:
        yield runtime
    finally:
        if runtime.relay is not None:
            await asyncio.wait_for(runtime.relay.drain(), 15)
        await runtime.producer.stop()
        if runtime.relay is not None:
            await runtime.relay.close()
        await runtime.engine.dispose()


def record(value: Any, topic: str, offset: int) -> Record:
    return Record(value, topic, 0, offset, None, None)  # type: ignore[arg-type]


def track(ws: str, user: str, name: str, minute: int) -> Event:
    return Event.model_validate({
        "id": f"e-{uuid.uuid4().hex}", "workspace_id": ws, "type": "track", "event": name,
        "user_id": user, "timestamp": T0 + timedelta(minutes=minute),
        "received_at": T0 + timedelta(minutes=minute)})


def identify(ws: str, user: str) -> Event:
    return Event.model_validate({
        "id": f"e-{uuid.uuid4().hex}", "workspace_id": ws, "type": "identify",
        "user_id": user, "traits": {"email": f"{user}@example.com"},
        "timestamp": T0, "received_at": T0})


def outcome(ws: str, profile_id: str, status: str, minute: int) -> DeliveryEvent:
    return DeliveryEvent.model_validate({
        "id": f"d-{uuid.uuid4().hex}", "workspace_id": ws, "profile_id": profile_id,
        "message_id": f"msg-{uuid.uuid4().hex}", "channel": "email", "status": status,
        "occurred_at": (T0 + timedelta(minutes=minute)).isoformat()})


async def profile_of(rt: Runtime, ws: str) -> str:
    async with rt.engine.connect() as conn:
        return (await conn.execute(select(tables.profiles.c.id).where(
            tables.profiles.c.workspace_id == ws))).scalar_one()


async def history(rt: Runtime, ws: str) -> list[tuple[str, str, str]]:
    """(name, event id, the writing transaction's id) of the workspace's history rows."""
    async with rt.engine.connect() as conn:
        return [tuple(r) for r in (await conn.execute(text(
            "SELECT name, event_id, xmin::text FROM profile.events WHERE workspace_id = :ws "
            "ORDER BY timestamp"), {"ws": ws})).all()]


async def inbox_rows(rt: Runtime, ids: list[str]) -> dict[tuple[str, str], str]:
    async with rt.engine.connect() as conn:
        return {(r[0], r[1]): r[2] for r in (await conn.execute(text(
            "SELECT consumer, message_id, xmin::text FROM profile.inbox "
            "WHERE message_id = ANY(:ids)"), {"ids": ids})).all()}


async def test_a_poll_of_both_topics_is_one_transaction_and_redelivery_applies_nothing(
        rt: Runtime, unique: str) -> None:
    ws = f"joint-{unique}"
    await handle_poll(rt, {EVENTS: [record(identify(ws, "u1"), "events", 0)]})
    pid = await profile_of(rt, ws)
    rt.published.clear()

    events = [track(ws, "u1", "Viewed", 1), track(ws, "u1", "Added", 2)]
    outcomes = [outcome(ws, pid, "delivered", 3), outcome(ws, pid, "opened", 4)]
    poll = {EVENTS: [record(e, "events", i + 1) for i, e in enumerate(events)],
            DELIVERY: [record(d, "delivery-events", i) for i, d in enumerate(outcomes)]}
    await handle_poll(rt, poll)

    claimed = await inbox_rows(rt, [e.dedupe_id() for e in events] +
                               [d.dedupe_id() for d in outcomes])
    assert set(claimed) == ({(EVENTS, e.dedupe_id()) for e in events} |
                            {(DELIVERY, d.dedupe_id()) for d in outcomes})
    rows = await history(rt, ws)
    assert [name for name, _, _ in rows] == [None, "Viewed", "Added", "Email Delivered",
                                             "Email Opened"]  # after the identify
    # One transaction: the four claims and the four history rows carry its id.
    assert len(set(claimed.values()) | {xid for _, _, xid in rows[-4:]}) == 1
    assert len(rt.published) == 1  # one outbox publish for the poll
    assert len(rt.published[0]) >= 4  # a profile event per event and per outcome

    # Redelivered (a crash before the offset commit): claimed already, nothing applied again.
    before = await event_count(rt, pid)
    rt.published.clear()
    await handle_poll(rt, poll)
    assert await history(rt, ws) == rows
    assert await inbox_rows(rt, list({m for _, m in claimed})) == claimed
    assert rt.published == [[]]
    assert await event_count(rt, pid) == before


async def event_count(rt: Runtime, pid: str) -> int:
    async with rt.engine.connect() as conn:
        return (await conn.execute(select(tables.profiles.c.event_count).where(
            tables.profiles.c.id == pid))).scalar_one()


async def test_a_joint_poll_does_what_the_two_handlers_do_in_turn(
        rt: Runtime, unique: str) -> None:
    """The same records, once as one joint poll and once topic by topic, in two workspaces:
    the same history, the same profile; a record one topic's handler applied is skipped
    when it comes again in a joint poll."""
    async def scenario(ws: str, joint: bool) -> list[str]:
        await handle_poll(rt, {EVENTS: [record(identify(ws, "u"), "events", 0)]})
        pid = await profile_of(rt, ws)
        events = [record(track(ws, "u", "Viewed", 1), "events", 1)]
        outcomes = [record(outcome(ws, pid, "bounced", 2), "delivery-events", 0)]
        if joint:
            await handle_poll(rt, {EVENTS: events, DELIVERY: outcomes})
        else:
            await handle_poll(rt, {EVENTS: events})
            await handle_poll(rt, {DELIVERY: outcomes})
            await handle_poll(rt, {EVENTS: events, DELIVERY: outcomes})  # a replay: nothing
        async with rt.engine.connect() as conn:
            state = (await conn.execute(select(
                tables.profiles.c.event_count, tables.profiles.c.traits).where(
                tables.profiles.c.id == pid))).one()
        return [name for name, _, _ in await history(rt, ws)] + [str(state[0]), str(state[1])]

    assert await scenario(f"joint-a-{unique}", True) == await scenario(f"joint-b-{unique}",
                                                                       False)


async def test_the_claim_keeps_each_topics_ids_apart(rt: Runtime, unique: str) -> None:
    """The inbox key is (consumer, message id): the same id under both topics is two claims."""
    ws = f"joint-c-{unique}"
    await handle_poll(rt, {EVENTS: [record(identify(ws, "u"), "events", 0)]})
    pid = await profile_of(rt, ws)
    event = track(ws, "u", "Viewed", 1).model_copy(update={"id": "same"})
    out = outcome(ws, pid, "opened", 2).model_copy(update={"id": "same"})
    same = f"{ws}:same"
    assert event.dedupe_id() == same and out.dedupe_id() == same
    await handle_poll(rt, {EVENTS: [record(event, "events", 1)],
                           DELIVERY: [record(out, "delivery-events", 0)]})
    assert set(await inbox_rows(rt, [same])) == {(EVENTS, same), (DELIVERY, same)}
    async with rt.engine.connect() as conn:
        n = (await conn.execute(select(func.count()).select_from(tables.events).where(
            tables.events.c.workspace_id == ws))).scalar_one()
    assert n == 3  # the identify, the track, the open


async def outbox_ids(rt: Runtime, ids: list[int]) -> set[int]:
    async with rt.engine.connect() as conn:
        return {r[0] for r in (await conn.execute(text(
            "SELECT id FROM profile.outbox WHERE id = ANY(:ids)"), {"ids": ids})).all()}


async def test_a_poll_returns_before_the_acks_and_each_keys_rows_keep_their_order(
        rt: Runtime, unique: str) -> None:
    """The relay's produce held back (the broker is the real one; only the call waits on a
    gate): three polls return while nothing is produced, their rows stay in the outbox;
    once the gate opens the first poll's rows go out, the second's and third's together in
    the next produce, and the topic holds each customer's profile events in poll order."""
    ws = f"joint-soon-{unique}"
    relay = rt.relay
    assert relay is not None
    gate, produces = asyncio.Event(), []
    real = relay._produce

    async def held(rows: Sequence[OutboxRow]) -> None:
        produces.append([r.id for r in rows])
        await gate.wait()
        await real(rows)

    relay._produce = held  # type: ignore[method-assign]
    try:
        await _polls_while_held(rt, ws, gate, produces)
    finally:
        gate.set()  # whatever failed, the fixture's drain must not wait on the gate


async def _polls_while_held(rt: Runtime, ws: str, gate: asyncio.Event,
                            produces: list[list[int]]) -> None:
    relay = rt.relay
    assert relay is not None
    users = ["u1", "u2", "u3"]
    polls = [[identify(ws, u) for u in users],
             [track(ws, u, "Viewed", 1) for u in users],
             [track(ws, u, "Added", 2) for u in users] + [track(ws, "u1", "Paid", 3)]]
    offset = 0
    for events in polls:  # each returns though its rows' produce is held
        await asyncio.wait_for(handle_poll(rt, {EVENTS: [
            record(e, "events", offset + i) for i, e in enumerate(events)]}), 10)
        offset += len(events)
    handed = [[r.id for r in rows] for rows in rt.published]
    assert len(handed) == 3 and all(handed)  # one hand-over per poll (events and changes)
    await asyncio.sleep(0.2)
    # Nothing acked, so nothing deleted: every row still durable in the outbox.
    assert await outbox_ids(rt, sum(handed, [])) == set(sum(handed, []))
    assert produces == [handed[0]]  # the first poll's produce is waiting; the rest queue

    gate.set()
    await asyncio.wait_for(relay.drain(), 15)
    assert produces == [handed[0], handed[1] + handed[2]]  # two polls in one produce
    assert await outbox_ids(rt, sum(handed, [])) == set()  # acked, then deleted

    expected = sum(len(events) for events in polls)

    def mine(records: list[Any]) -> list[Any]:
        return [r for r in records if ProfileEvent.model_validate_json(r.value).workspace_id
                == ws]

    got = mine(await read_topic(rt.settings.kafka_bootstrap, rt.settings.topic(
        "profile-events"), lambda rs: len(mine(rs)) >= expected, 30))
    assert len(got) == expected  # each once
    per_key: dict[bytes, list[str | None]] = {}
    for r in sorted(got, key=lambda r: (r.partition, r.offset)):
        per_key.setdefault(r.key, []).append(ProfileEvent.model_validate_json(r.value).event.event)
    assert sorted(per_key.values()) == sorted([[None, "Viewed", "Added", "Paid"],
                                               [None, "Viewed", "Added"],
                                               [None, "Viewed", "Added"]])
