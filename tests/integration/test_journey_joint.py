"""Journey's joint handler on real Postgres: a poll of profile events and profile changes.

- both topics' records of one poll are claimed and applied in ONE transaction (inbox rows,
  snapshots and the instance it opens share a transaction id); redelivered, nothing twice
- a poll whose changes hold a merge goes topic by topic, events first: the instance an
  event opened for the merged profile ends up under the surviving one
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from services.journey import tables
from services.journey.handlers import CHANGES, EVENTS, handle_poll
from services.journey.publisher import OutboxPublisher
from services.journey.store import Documents
from shared.clock import SystemClock
from shared.contracts.events import Event, EventType
from shared.contracts.profile import ChangeKind, ProfileChange, ProfileEvent, ProfileSnapshot
from shared.kafka import Record
from shared.runtime import ServiceParts, ServiceRuntime
from shared.settings import Settings
from tests.integration.test_journey_engine import Harness, fast_example, running_harness

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def harness(settings: Settings) -> AsyncIterator[Harness]:
    async with running_harness(settings) as h:  # to publish journeys through the API
        yield h


@pytest.fixture
async def rt(harness: Harness) -> AsyncIterator[ServiceRuntime]:
    runtime = ServiceRuntime(ServiceParts("journey", tables.api_keys, outbox=tables.outbox),
                             harness.settings)
    try:
        yield runtime
    finally:
        if runtime.relay is not None:
            await runtime.relay.close()
        await runtime.engine.dispose()


def record(value: Any, offset: int) -> Record:
    return Record(value, "t", 0, offset, None, None)  # type: ignore[arg-type]


def order(ws: str, profile: str) -> ProfileEvent:
    now = datetime.now(UTC)
    event_id = f"ev-{uuid.uuid4().hex}"
    return ProfileEvent(
        id=event_id, workspace_id=ws, profile_id=profile,
        profile=ProfileSnapshot(profile_id=profile, email=f"{profile}@example.com"),
        event=Event(id=event_id, workspace_id=ws, type=EventType.track, event="Order Completed",
                    user_id=f"u-{profile}", properties={"order_id": "o1", "total": 60},
                    timestamp=now, received_at=now))


def change(ws: str, profile: str, kind: ChangeKind, **data: Any) -> ProfileChange:
    return ProfileChange(id=f"ch-{uuid.uuid4().hex}", workspace_id=ws, profile_id=profile,
                         kind=kind, data=data, occurred_at=datetime.now(UTC),
                         profile=ProfileSnapshot(profile_id=profile,
                                                 email=f"{profile}@example.com"))


async def rows(rt: ServiceRuntime, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    async with rt.engine.connect() as conn:
        return [tuple(r) for r in (await conn.execute(text(sql), params)).all()]


async def handle(rt: ServiceRuntime, polled: dict[str, list[Record]]) -> None:
    await handle_poll(rt, SystemClock(), Documents(), OutboxPublisher(), polled)


async def test_a_poll_of_both_topics_is_one_transaction_and_redelivery_applies_nothing(
        harness: Harness, rt: ServiceRuntime) -> None:
    ws, headers = await harness.workspace()
    await harness.publish(headers, fast_example())
    poll = {EVENTS: [record(order(ws, "p1"), 0)],
            CHANGES: [record(change(ws, "p2", ChangeKind.traits_changed, traits=["plan"]), 0)]}
    await handle(rt, poll)

    ids = [r.value.dedupe_id() for rs in poll.values() for r in rs]
    claims = await rows(rt, "SELECT consumer, xmin::text FROM journey.inbox "
                            "WHERE message_id = ANY(:ids)", ids=ids)
    assert sorted(c for c, _ in claims) == sorted([EVENTS, CHANGES])
    snaps = await rows(rt, "SELECT profile_id, xmin::text FROM journey.snapshots "
                           "WHERE workspace_id = :ws", ws=ws)
    opened = await rows(rt, "SELECT profile_id, xmin::text FROM journey.instances "
                            "WHERE workspace_id = :ws", ws=ws)
    assert sorted(p for p, _ in snaps) == ["p1", "p2"]
    assert [p for p, _ in opened] == ["p1"]
    assert len({x for _, x in claims + snaps + opened}) == 1  # one transaction

    await handle(rt, poll)  # redelivered: claimed already
    assert await rows(rt, "SELECT profile_id, xmin::text FROM journey.instances "
                          "WHERE workspace_id = :ws", ws=ws) == opened
    assert len(await rows(rt, "SELECT 1 FROM journey.inbox WHERE message_id = ANY(:ids)",
                          ids=ids)) == 2


async def test_a_merge_in_the_poll_goes_topic_by_topic_events_first(
        harness: Harness, rt: ServiceRuntime) -> None:
    ws, headers = await harness.workspace()
    await harness.publish(headers, fast_example())
    poll = {EVENTS: [record(order(ws, "old"), 0)],
            CHANGES: [record(change(ws, "new", ChangeKind.merged, merged_ids=["old"]), 0)]}
    await handle(rt, poll)

    ids = [r.value.dedupe_id() for rs in poll.values() for r in rs]
    claims = dict(await rows(rt, "SELECT consumer, xmin::text FROM journey.inbox "
                                 "WHERE message_id = ANY(:ids)", ids=ids))
    assert set(claims) == {EVENTS, CHANGES} and claims[EVENTS] != claims[CHANGES]
    # The event's instance was opened first, then the merge moved it to the survivor.
    assert await rows(rt, "SELECT profile_id FROM journey.instances WHERE workspace_id = :ws",
                      ws=ws) == [("new",)]
