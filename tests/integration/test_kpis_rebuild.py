"""The set-based rebuild (services/profile/kpis_rebuild_sql.py) against the consumer's own
rollup writer meeting the same history one event per batch in time order
(tests/support/kpis_replay.py): every rollup row equal, on a generated history with what
makes the two paths differ if anything does: opens and clicks repeated after an order,
orders retried with the same order_id, orders without one, refunds before and after their
orders, other currencies, test sends, control-group suppressions, NPS answers, events at
the same instant, a reporting segment, a day boundary in a non-UTC zone."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from services.profile import kpis_rebuild
from services.profile.domain.conventions import Conventions
from services.profile.tables import events, segment_members, segments, workspace_settings
from shared.db import create_engine
from tests.support import kpis_replay

pytestmark = pytest.mark.integration
START = datetime(2026, 11, 1, 22, tzinfo=UTC)  # 23:00 in Berlin: days turn within the hour
CONV = Conventions(timezone="Europe/Berlin", currency="EUR")


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


def history(ws: str, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    people = [f"p{i}" for i in range(10)]
    rows: list[dict[str, Any]] = []

    def add(event_id: str, pid: str, name: str, props: dict[str, Any], at: datetime) -> None:
        rows.append({"workspace_id": ws, "event_id": event_id, "profile_id": pid,
                     "type": "track", "name": name, "properties": props, "timestamp": at,
                     "received_at": at})

    def when() -> datetime:  # minutes apart: several events share an instant
        return START + timedelta(minutes=10 * rng.randrange(6 * 24 * 6))

    for m in range(60):
        pid, at = rng.choice(people), when()
        origin: dict[str, Any] = {"broadcast": f"b{m % 2}"} if m % 4 == 0 else \
            {"journey": {"key": f"j{m % 3}", "version": 1}}
        base = {"message_id": f"m{m}", "channel": rng.choice(["email", "sms"]),
                "template": f"t{m % 5}", **origin}
        if m % 17 == 0:
            base["test"] = True
        steps = ["sent", "delivered"] if rng.random() < 0.85 else ["sent", "bounced"]
        steps += rng.choice([[], ["opened"], ["opened", "opened"], ["clicked"],
                             ["opened", "clicked", "clicked"], ["unsubscribed"]])
        for k, status in enumerate(steps):
            at += timedelta(minutes=rng.choice([0, 30, 600]))
            add(f"delivery:m{m}-{k}", pid, f"Email {status}", base | {"status": status}, at)
    for pid in people[:2]:  # the global control group's suppressed sends
        add(f"delivery:c-{pid}", pid, "Message suppressed",
            {"message_id": f"c-{pid}", "channel": "email", "status": "suppressed",
             "rule": "control_group", "journey": {"key": "j0", "version": 1}}, when())
    for o in range(40):
        pid, at = rng.choice(people), when()
        props: dict[str, Any] = {"revenue": round(rng.uniform(5, 90), 2),
                                 "currency": "usd " if o % 9 == 0 else "EUR"}
        if o % 7 != 0:
            props["order_id"] = f"o{o}"
        add(f"e-o{o}", pid, "Order Completed", props, at)
        if o % 5 == 0 and "order_id" in props:  # retried: same order_id, later
            add(f"e-o{o}-again", pid, "Order Completed", props, at + timedelta(minutes=3))
        if o % 4 == 0 and "order_id" in props:  # refunds after and (o % 8 == 0) before
            shift = timedelta(days=-1 if o % 8 == 0 else 2)
            add(f"e-r{o}", pid, "Order Refunded",
                {"order_id": props["order_id"], "revenue": "12.5", "currency": "EUR"},
                at + shift)
    for n in range(12):
        add(f"e-n{n}", rng.choice(people), "NPS Survey Submitted",
            {"score": rng.randrange(11)}, when())
    return rows


@pytest.mark.parametrize("seed", [1, 2])
async def test_the_rebuild_writes_the_rows_the_consumer_writes(engine: AsyncEngine,
                                                               unique: str, seed: int) -> None:
    ws = f"kpi-{unique}"
    async with engine.begin() as conn:
        await conn.execute(insert(workspace_settings).values(
            workspace_id=ws, conventions=CONV.model_dump(mode="json")))
        for key, reporting in (("vip", True), ("other", False)):
            await conn.execute(insert(segments).values(
                workspace_id=ws, key=key, name=key, reporting=reporting,
                rule={"field": "profile.traits.plan", "op": "eq", "value": key}))
        await conn.execute(insert(segment_members), [
            {"workspace_id": ws, "segment_key": key, "profile_id": f"p{i}"}
            for key, i in (("vip", 1), ("vip", 2), ("vip", 3), ("other", 1))])
        rows = history(ws, seed)
        for r in rows:  # the column is jsonb: stored as the consumer stores it
            r["properties"] = orjson.loads(orjson.dumps(r["properties"]))
        await conn.execute(insert(events), rows)
    done: list[int] = []

    async def report(n: int) -> None:
        done.append(n)

    assert await kpis_rebuild.rebuild(engine, ws, report) == len(rows)
    assert done[-1] == len(rows)
    rebuilt = await kpis_replay.rollups(engine, ws)
    metrics = {r[4] for r in rebuilt["kpi_counts"]}
    # What the history holds shows in the rollups (so the comparison compares something).
    assert {"sent", "delivered", "bounced", "unique_opens", "unique_clicks", "orders",
            "refunded", "attributed_orders", "attributed_revenue", "attributed_refunded",
            "nps_responses"} <= metrics
    assert {r[0] for r in rebuilt["kpi_bits"]} >= {"reached", "customer", "control"}
    assert {r[5] for r in rebuilt["kpi_counts"]} >= {"EUR", "USD"}
    assert {r[3] for r in rebuilt["kpi_counts"]} >= {"", "vip"}
    assert rebuilt["kpi_control"]
    await kpis_replay.replay(engine, ws)
    replayed = await kpis_replay.rollups(engine, ws)
    for table, got in rebuilt.items():
        assert got == replayed[table], (table, sorted(got ^ replayed[table])[:6])
