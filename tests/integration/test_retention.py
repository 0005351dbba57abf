"""Retention against Postgres: what each prune deletes, and what it must keep."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.journey import tables as journey
from services.journey.retention import journey_prunes, longest_cap, prune_decisions, prune_sends
from services.journey.settings import JourneySettings
from services.messaging import tables as messaging
from services.profile import tables as profile
from shared.db.engine import create_engine
from shared.db.retention import RetentionWorker, prune_inbox

pytestmark = pytest.mark.integration
DAY = timedelta(days=1)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.mark.parametrize("inbox", [profile.inbox, journey.inbox, messaging.inbox],
                         ids=["profile", "journey", "messaging"])
async def test_inbox_forgets_ids_past_the_window_in_chunks(engine: AsyncEngine,
                                                           inbox: Table) -> None:
    now, consumer = datetime.now(UTC), f"test-{uuid.uuid4().hex[:8]}"
    ages = {"a": 30 * DAY, "b": 8 * DAY, "c": 8 * DAY, "d": 6 * DAY, "e": timedelta(0)}
    async with engine.begin() as conn:
        await conn.execute(insert(inbox), [
            {"consumer": consumer, "message_id": m, "processed_at": now - age}
            for m, age in ages.items()])
    deleted = await prune_inbox(engine, inbox, now, timedelta(days=7), chunk=2)
    assert deleted >= 3  # other tests' rows may be that old too
    async with engine.connect() as conn:
        left = (await conn.execute(select(inbox.c.message_id).where(
            inbox.c.consumer == consumer))).scalars().all()
    assert sorted(left) == ["d", "e"]


async def test_sends_are_kept_for_the_longest_cap_and_at_least_the_floor(
        engine: AsyncEngine) -> None:
    now, ws = datetime.now(UTC), f"ws-{uuid.uuid4().hex[:8]}"
    async with engine.begin() as conn:
        # A published version that caps email over 200 days reads sends that far back.
        await conn.execute(insert(journey.journey_versions).values(
            workspace_id=ws, key="long-cap", version=1, document={
                "key": "long-cap", "name": "Long cap", "stages": [{"key": "s"}],
                "frequency_cap": {"email": {"max": 1, "per": "P200D"}}}))
        await conn.execute(insert(journey.sends), [
            {"workspace_id": ws, "idempotency_key": f"k{days}", "profile_id": "p",
             "channel": "email", "journey_key": "long-cap", "sent_at": now - days * DAY}
            for days in (400, 150, 10)])
    assert await longest_cap(engine) >= timedelta(days=200)
    await prune_sends(engine, now, keep_at_least=timedelta(days=30), chunk=1)
    async with engine.connect() as conn:
        left = (await conn.execute(select(journey.sends.c.idempotency_key).where(
            journey.sends.c.workspace_id == ws))).scalars().all()
    assert sorted(left) == ["k10", "k150"]


async def test_decisions_go_with_their_finished_instance_past_the_trace_retention(
        engine: AsyncEngine) -> None:
    now, ws = datetime.now(UTC), f"ws-{uuid.uuid4().hex[:8]}"

    def instance(status: str, entered: timedelta, ended: timedelta | None) -> dict[str, object]:
        return {"id": str(uuid.uuid4()), "workspace_id": ws, "journey_key": "j", "version": 1,
                "profile_id": "p", "instance_key": uuid.uuid4().hex, "entry_id": "e",
                "stage": "s", "status": status, "entered_at": now - entered,
                "stage_entered_at": now - entered,
                "ended_at": None if ended is None else now - ended}
    gone = instance("completed", 120 * DAY, 100 * DAY)   # trace past retention: deleted
    running = instance("active", 120 * DAY, None)        # still running: its trace stays
    recent = instance("exited", 120 * DAY, 10 * DAY)     # ended recently: whole trace stays
    # Decisions are walked by id (ids grow with time): negative ids put these old ones
    # ahead of every other test's recent decisions.
    base = -(uuid.uuid4().int % 10**12) - 100
    rows = [(gone, 120), (gone, 100), (running, 120), (recent, 120), (recent, 10),
            (None, 120), (None, 5)]  # None: a refused entry, without an instance
    async with engine.begin() as conn:
        await conn.execute(insert(journey.instances), [gone, running, recent])
        await conn.execute(insert(journey.decisions), [
            {"id": base + n, "workspace_id": ws, "profile_id": "p", "journey_key": "j",
             "version": 1, "instance_id": inst and inst["id"], "kind": "stage",
             "outcome": "entered", "at": now - days * DAY}
            for n, (inst, days) in enumerate(rows)])
    await prune_decisions(engine, now, keep=timedelta(days=90), chunk=2)
    async with engine.connect() as conn:
        left = (await conn.execute(select(journey.decisions.c.id).where(
            journey.decisions.c.workspace_id == ws))).scalars().all()
    assert sorted(n - base for n in left) == [2, 3, 4, 6]


async def test_the_worker_runs_every_prune_even_when_one_fails(engine: AsyncEngine) -> None:
    calls: list[str] = []

    async def broken(_engine: AsyncEngine, _now: datetime) -> int:
        calls.append("broken")
        raise RuntimeError("boom")

    async def counted(_engine: AsyncEngine, _now: datetime) -> int:
        calls.append("counted")
        return 3

    worker = RetentionWorker(engine, {"broken": broken, "counted": counted}, interval_s=60)
    assert await worker.run_once() == {"counted": 3}
    assert calls == ["broken", "counted"]


async def test_journey_prunes_run_against_the_real_tables(engine: AsyncEngine) -> None:
    """The defaults: a pass over journey's tables succeeds and deletes nothing recent."""
    async with engine.connect() as conn:
        before = (await conn.execute(select(func.count()).select_from(journey.decisions).where(
            journey.decisions.c.at > datetime.now(UTC) - DAY))).scalar_one()
    worker = RetentionWorker(engine, journey_prunes(JourneySettings()), interval_s=60)
    done = await worker.run_once()
    assert set(done) == {"inbox", "sends", "decisions"}
    async with engine.connect() as conn:
        after = (await conn.execute(select(func.count()).select_from(journey.decisions).where(
            journey.decisions.c.at > datetime.now(UTC) - DAY))).scalar_one()
    assert after >= before
