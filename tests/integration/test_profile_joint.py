"""Profile's joint handler on real Postgres and Tansu: a poll of events and delivery outcomes.

- both topics' records of one poll are claimed and applied in ONE transaction (their inbox
  rows and their history rows share a transaction id), published once after the commit
- a redelivered joint poll (the offsets were not committed) applies nothing twice
- the joint poll does what the two topics' handlers do one after the other
- a record seen by one topic's handler and again in a joint poll is not applied twice
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text

from services.profile import tables
from services.profile.handlers import DELIVERY, EVENTS, handle_poll
from shared.contracts.delivery import DeliveryEvent
from shared.contracts.events import Event
from shared.db.outbox import OutboxRow
from shared.kafka import Record
from shared.kafka.admin import ensure_topics
from shared.runtime import ServiceParts, ServiceRuntime
from shared.settings import Settings

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 2, tzinfo=UTC)


class Runtime(ServiceRuntime):
    """Profile's runtime with the publish after commit recorded (and still done)."""

    published: list[list[OutboxRow]]

    async def publish(self, rows: Any) -> None:
        self.published.append(list(rows))
        await super().publish(rows)


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
