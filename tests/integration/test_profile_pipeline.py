"""The batch path on real Postgres, one batch at a time (what one poll hands the handler)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.profile import kpis_store
from services.profile import repository as repo
from services.profile.domain.identity import identifier_hash
from services.profile.pipeline import apply_batch
from services.profile.repository import IdentityRace
from services.profile.tables import events, identities, outbox, profiles, segments
from shared.contracts.events import Event
from shared.db import create_engine
from shared.settings import Settings

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings.database_url)
    yield engine
    await engine.dispose()


def batch(ws: str, *calls: dict[str, Any]) -> list[Event]:
    return [Event.model_validate({"id": f"{ws}-{i}-{uuid.uuid4().hex[:8]}", "workspace_id": ws,
                                  "timestamp": T0 + timedelta(minutes=i),
                                  "received_at": T0 + timedelta(minutes=i), **c})
            for i, c in enumerate(calls)]


async def test_a_merge_inside_one_batch_keeps_every_identifier_and_event(
        engine: AsyncEngine, settings: Settings, unique: str) -> None:
    ws = f"pipe-{unique}"
    long_anon = "z" * 400  # longer than an identity value: stored cut, found the same way
    items = batch(ws, {"type": "track", "event": "Viewed", "anonymous_id": "x1"},
                  {"type": "track", "event": "Viewed", "anonymous_id": "y1"},
                  {"type": "identify", "anonymous_id": "x1", "traits": {"email": "q@q.io"}},
                  {"type": "identify", "anonymous_id": "y1", "traits": {"email": "q@q.io"}},
                  {"type": "track", "event": "Viewed", "anonymous_id": long_anon},
                  {"type": "track", "event": "Viewed", "anonymous_id": long_anon})
    async with engine.begin() as conn:
        await apply_batch(conn, items, settings, T0 + timedelta(hours=1))
    async with engine.connect() as conn:
        owners = dict((await conn.execute(select(identities.c.value, identities.c.profile_id)
                                          .where(identities.c.workspace_id == ws))).all())
        live = set((await conn.execute(select(profiles.c.id).where(
            profiles.c.workspace_id == ws))).scalars())
        per_profile = dict((await conn.execute(
            select(events.c.profile_id, func.count()).where(events.c.workspace_id == ws)
            .group_by(events.c.profile_id))).all())
        counts = dict((await conn.execute(select(profiles.c.id, profiles.c.event_count).where(
            profiles.c.workspace_id == ws))).all())
    assert set(owners.values()) <= live, "an identifier points at a merged-away profile"
    assert owners["x1"] == owners["y1"] == owners["q@q.io"]
    assert owners[long_anon[:320]] != owners["x1"]
    assert len(live) == 2 and per_profile == counts == {owners["x1"]: 4, owners[long_anon[:320]]: 2}



async def test_an_alias_chain_resolves_whatever_the_order(
        engine: AsyncEngine, settings: Settings, unique: str) -> None:
    calls = [{"type": "track", "event": "Viewed", "anonymous_id": "anon-x"},
             {"type": "alias", "user_id": "b", "previous_id": "anon-x"},
             {"type": "track", "event": "Viewed", "user_id": "c"},
             {"type": "alias", "user_id": "c", "previous_id": "b"}]
    for n, order in enumerate(([0, 1, 2, 3], [2, 3, 0, 1], [3, 1, 2, 0])):
        ws = f"pipe-{unique}-{n}"
        async with engine.begin() as conn:
            for i in order:  # one message per batch, in this order
                await apply_batch(conn, batch(ws, calls[i]), settings, T0)
        async with engine.connect() as conn:
            live = (await conn.execute(select(profiles.c.id, profiles.c.event_count).where(
                profiles.c.workspace_id == ws))).all()
        assert len(live) == 1 and live[0].event_count == 4, order


async def test_profile_events_carry_the_segments_and_traits_the_batch_left(
        engine: AsyncEngine, settings: Settings, unique: str) -> None:
    """Profile events are encoded while the batch's writes run, with the memberships held
    before the batch; a profile the segment evaluation moves gets its events re-encoded. Each
    event carries the traits as that event left them, even later in the same batch."""
    ws = f"seg-{unique}"
    async with engine.begin() as conn:
        await conn.execute(segments.insert().values(
            workspace_id=ws, key="pro", name="Pro",
            rule={"field": "profile.traits.plan", "op": "eq", "value": "pro"}))
    items = batch(ws, {"type": "identify", "user_id": "a", "traits": {"plan": "free"}},
                  {"type": "identify", "user_id": "a", "traits": {"plan": "pro"}},
                  {"type": "track", "event": "Viewed", "user_id": "b"})
    async with engine.begin() as conn:
        ids = await apply_batch(conn, items, settings, T0 + timedelta(hours=1))
    async with engine.connect() as conn:
        rows = (await conn.execute(select(outbox.c.topic, outbox.c.value).where(
            outbox.c.id.in_([r.id for r in ids])).order_by(outbox.c.id))).all()
    published = [orjson.loads(r.value) for r in rows if r.topic.endswith("profile-events")]
    assert [m["profile"]["traits"] for m in published] == [{"plan": "free"}, {"plan": "pro"}, {}]
    # Segments are those the batch leaves the profile with (membership is per batch).
    assert [m["profile"]["segments"] for m in published] == [["pro"], ["pro"], []]
    entered = [orjson.loads(r.value) for r in rows if r.topic.endswith("profile-changes")
               and orjson.loads(r.value)["kind"] == "segment_entered"]
    assert [c["profile"]["segments"] for c in entered] == [["pro"]]


async def test_an_order_another_writer_stored_meanwhile_retries_the_batch(
        engine: AsyncEngine, settings: Settings, unique: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two batches holding one order_id (two partitions, two profiles) both read it as new:
    the one whose kpi_orders insert finds it stored rolls back and runs again, and then
    counts it as known. Played here by reading known orders as none, once."""
    ws = f"ord-{unique}"
    order = {"type": "track", "event": "Order Completed",
             "properties": {"order_id": "o-1", "revenue": 30}}
    async with engine.begin() as conn:
        await apply_batch(conn, batch(ws, {**order, "user_id": "a"}), settings, T0)
    real = kpis_store.known_orders

    async def stale(*_: Any) -> kpis_store.Prior:
        return kpis_store.Prior(set(), None)
    monkeypatch.setattr(kpis_store, "known_orders", stale)
    retry = batch(ws, {**order, "user_id": "b"})
    with pytest.raises(kpis_store.OrderRace):
        async with engine.begin() as conn:
            await apply_batch(conn, retry, settings, T0)
    monkeypatch.setattr(kpis_store, "known_orders", real)
    async with engine.begin() as conn:
        await apply_batch(conn, retry, settings, T0)
    async with engine.connect() as conn:
        rows = (await conn.execute(select(profiles.c.user_id, profiles.c.order_count,
                                          profiles.c.gross_revenue).where(
            profiles.c.workspace_id == ws).order_by(profiles.c.user_id))).all()
    assert [tuple(r) for r in rows] == [("a", 1, 30), ("b", 0, 0)]


async def test_the_owners_statement_locks_the_known_profiles_and_sees_a_vanished_one(
        engine: AsyncEngine, settings: Settings, unique: str) -> None:
    """Owners, tombstones and the profile locks are one statement (repository.owners): the
    profiles it returns stay locked until the batch commits, and an identifier whose profile
    another writer removed meanwhile (a merge, an erasure) makes the batch retry."""
    ws = f"lock-{unique}"
    async with engine.begin() as conn:
        await apply_batch(conn, batch(ws, {"type": "identify", "user_id": "u1"},
                                      {"type": "identify", "user_id": "u2"}), settings, T0)
    keys = {(ws, "user_id", u): identifier_hash(ws, ("user_id", u)) for u in ("u1", "u2", "u3")}
    async with engine.begin() as conn:
        known, gone, states = await repo.owners(conn, keys)
        assert set(known) == {(ws, "user_id", "u1"), (ws, "user_id", "u2")} and not gone
        assert states.keys() == set(known.values())
        assert {s.user_id for s in states.values()} == {"u1", "u2"}
        async with engine.connect() as other:
            with pytest.raises(Exception, match="could not obtain lock"):
                await other.exec_driver_sql(
                    "SELECT 1 FROM profile.profiles WHERE id = $1 FOR UPDATE NOWAIT",
                    (known[(ws, "user_id", "u1")],))
    async with engine.begin() as conn:  # u1's profile goes, its identity stays: a race
        await conn.execute(profiles.delete().where(profiles.c.id == known[(ws, "user_id", "u1")]))
        with pytest.raises(IdentityRace):
            await repo.owners(conn, keys)
