"""Journey's store against Postgres: what a signal's batch leaves as it found it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.journey import store
from services.journey.domain.state import Instance
from services.journey.tables import instances
from shared.db.engine import create_engine

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
