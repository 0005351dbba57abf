"""Journey's store against Postgres: what a signal's batch leaves as it found it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.journey import store
from services.journey.domain.state import Instance
from services.journey.policy import store as policy_store
from services.journey.tables import instances, journey_versions, outbox, sends
from services.journey.unit import Unit
from shared.db.engine import create_engine
from shared.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=2)
    yield engine
    await engine.dispose()


async def test_a_signal_batch_keeps_the_context_it_did_not_load(engine: AsyncEngine) -> None:
    """Instances are loaded for signals without their context (the entry event); an update
    keeps the stored one, and a firing timer reads it back."""
    now = datetime.now(UTC)
    ws, pid = f"ws-{uuid.uuid4().hex[:8]}", "p1"
    context = {"event": {"id": "e1", "properties": {"order_id": "o1", "total": 60}}}
    inst = Instance(id=str(uuid.uuid4()), workspace_id=ws, journey_key="j", version=1,
                    profile_id=pid, instance_key="o1", entry_id="e1", stage="s",
                    status="active", holdout=False, entered_at=now, stage_entered_at=now,
                    step="nap", wake_at=now + timedelta(days=1), wake_kind="wait",
                    context=context, new=True)
    async with engine.begin() as conn:
        await store.save_instances(conn, [inst])

    async with engine.begin() as conn:
        [loaded] = await store.open_instances(conn, [(ws, pid)], now)
        assert loaded.context is None
        [latest] = await store.latest_instances(conn, [(ws, "j", pid, "o1")])
        assert latest.id == inst.id and latest.context is None
        loaded.wake_at, loaded.dirty = now - timedelta(seconds=1), True  # now due
        await store.save_instances(conn, [loaded])

    async with engine.begin() as conn:
        stored = (await conn.execute(select(instances.c.context, instances.c.wake_at)
                                     .where(instances.c.id == inst.id))).one()
        assert stored.context == context
        assert stored.wake_at == now - timedelta(seconds=1)
        due = [i for i in await store.due_instances(conn, now, 10_000) if i.id == inst.id]
        assert [i.context for i in due] == [context]


async def test_a_cap_holds_when_the_lock_winner_read_its_clock_after_the_loser(
        engine: AsyncEngine) -> None:
    """Two replicas' timer batches for one customer under a cap of one: B reads its clock,
    then A (a moment later) takes the customer's lock first, sends and commits; B, let in,
    must count A's send although it is stamped after B's `now`, and hold its own."""
    ws, pid = f"ws-{uuid.uuid4().hex[:8]}", "racer"
    t0 = datetime(2001, 1, 1, tzinfo=UTC)  # due before anything else in the database
    doc = {"key": "race", "name": "Race", "stages": [{"key": "s", "enter": {"event": "Go"},
                                                      "steps": [
        {"id": "w", "wait": "PT1S"}, {"id": "m", "send": {"channel": "email",
                                                         "template": "promo"}}]}]}
    async with engine.begin() as conn:
        await conn.execute(insert(journey_versions).values(workspace_id=ws, key="race",
                                                           version=1, document=doc))
        await policy_store.save_policy(conn, ws, {"caps": [
            {"channel": "email", "max": 1, "per": "P1D"}]})
        await store.save_snapshots(conn, {(ws, pid): {"profile_id": pid,
                                                      "email": "r@example.com"}})
        await store.save_instances(conn, [Instance(
            id=str(uuid.uuid4()), workspace_id=ws, journey_key="race", version=1,
            profile_id=pid, instance_key=key, entry_id=f"e-{key}", stage="s",
            status="active", holdout=False, entered_at=t0 - timedelta(seconds=2),
            stage_entered_at=t0 - timedelta(seconds=2), step="w", wake_at=t0 - timedelta(
                seconds=1), wake_kind="wait", context={"event": {}}, new=True)
            for key in ("a", "b")])
    settings = Settings()
    async with engine.connect() as conn_a, engine.connect() as conn_b:
        await conn_a.begin()
        await conn_b.begin()
        late = Unit(conn_a, store.Documents(), settings, outbox, t0 + timedelta(milliseconds=3))
        early = Unit(conn_b, store.Documents(), settings, outbox, t0)
        [first] = await late.load_due(1)  # holds the customer's lock
        waiting = asyncio.create_task(early.load_due(1))
        await asyncio.sleep(0.5)
        assert not waiting.done()  # B claimed the other instance and waits on the lock
        late.fire(first)
        await late.flush()
        await conn_a.commit()
        [second] = await asyncio.wait_for(waiting, 10)
        early.fire(second)
        await early.flush()
        await conn_b.commit()
    async with engine.connect() as conn:
        sent = (await conn.execute(select(sends.c.sent_at).where(
            sends.c.workspace_id == ws))).scalars().all()
        held = (await conn.execute(select(instances.c.wake_kind).where(
            instances.c.workspace_id == ws, instances.c.id == second.id))).scalar_one()
    assert sent == [t0 + timedelta(milliseconds=3)] and held == "deferred"


async def test_the_latest_instances_read_takes_the_customers_locks_even_finding_none(
        engine: AsyncEngine) -> None:
    """A batch's advisory locks ride on the latest-instances read (one round trip less):
    they are held when it returns, whether or not it found an instance, and a second
    transaction on the same customer waits for them until the first commits."""
    ws, pid = f"ws-{uuid.uuid4().hex[:8]}", "p1"
    key = [(ws, "j", pid, "o1")]
    held = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
            "AND pid = pg_backend_pid()")
    async with engine.begin() as conn:
        assert await store.latest_instances(conn, key, [(ws, pid)]) == []
        assert (await conn.exec_driver_sql(held)).scalar() == 1

        async def second() -> None:
            async with engine.begin() as other:
                await store.lock_customers(other, [(ws, pid)])

        waiting = asyncio.create_task(second())
        await asyncio.sleep(0.3)
        assert not waiting.done()  # blocked on the first transaction's lock
    await asyncio.wait_for(waiting, 5)
