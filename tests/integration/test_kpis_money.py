"""`uplift.crm`'s read of kpi_money (numpy sums of the customers' packed records) against
the read it replaced (each customer's window summed in SQL from kpi_customer_days joined to
kpi_numbers), on a generated dataset through the consumer's batch function: orders in two
currencies, a retried order_id, refunds on orders and a refund alone, anonymous shoppers
merged into known customers, an erasure, a non-UTC zone, and kpi_money's day rows compacted
along the way; then after a rebuild.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from services.profile import commands, kpis_rebuild, kpis_store, kpis_uplift
from services.profile.domain.conventions import Conventions
from services.profile.repository import fetch
from services.profile.tables import workspace_settings
from shared.settings import Settings
from tests.integration.test_kpis_dataset import dl, engine, ev, order, pids, run

pytestmark = pytest.mark.integration
__all__ = ["engine"]  # the fixture
D0 = datetime(2026, 11, 2, tzinfo=UTC)
H = timedelta(hours=1)
CONV = Conventions(timezone="Europe/Berlin", currency="EUR")

# The read before kpi_money (kpis_uplift at profile_0008), after kpis_uplift._ARMS.
_SQL_MONEY = (
    ", money AS MATERIALIZED (SELECT n.n, m.orders, m.v FROM (SELECT profile_id, sum(orders) "
    "AS orders, coalesce(sum(revenue) FILTER (WHERE currency = ANY($5::text[])), 0) AS v "
    "FROM profile.kpi_customer_days WHERE workspace_id = $1 AND day BETWEEN $3 AND $4 GROUP "
    "BY 1) AS m JOIN profile.kpi_numbers n ON n.workspace_id = $1 AND n.profile_id = "
    "m.profile_id AND n.last_day >= $3 AND n.first_day <= $4), who AS (SELECT "
    "get_bit(arm.control, m.n % 8192) = 1 AS control, "
    "get_bit(arm.control, m.n % 8192) + get_bit(arm.treated, m.n % 8192) = 1 AS inside, "
    "m.orders, m.v FROM money m JOIN arm ON arm.chunk = m.n / 8192) "
    "SELECT (SELECT sum(bit_count(treated)) FROM arm), (SELECT sum(bit_count(control)) FROM "
    "arm), count(*) FILTER (WHERE NOT control AND orders > 0), sum(v) FILTER (WHERE NOT "
    "control), sum(v * v) FILTER (WHERE NOT control), count(*) FILTER (WHERE control AND "
    "orders > 0), sum(v) FILTER (WHERE control), sum(v * v) FILTER (WHERE control) FROM who "
    "WHERE inside")


async def sums(engine: AsyncEngine, ws: str, first: date, last: date) -> tuple[Any, Any]:
    """Per arm (treated, control): (size, converted, revenue, squares), by SQL and by numpy."""
    args = (ws, "", first, last, ["", "EUR"])
    async with engine.connect() as conn:
        await kpis_uplift.read_settings(conn)
        old = (await fetch(conn, kpis_uplift._ARMS + _SQL_MONEY, *args))[0]
        new = kpis_uplift._arms_sums(await fetch(conn, kpis_uplift._ARMS + kpis_uplift._MONEY,
                                                 *args))
    by_sql = {c: (int(old[i] or 0), int(old[j] or 0), float(old[j + 1] or 0),
                  float(old[j + 2] or 0)) for c, i, j in ((False, 0, 2), (True, 1, 5))}
    by_numpy = {c: (0, 0, 0.0, 0.0) for c in (False, True)}
    for r in new:
        by_numpy[r["control"]] = (r["n"], r["converted"], r["total"], r["squares"])
    return by_sql, by_numpy


def same(a: dict[bool, Any], b: dict[bool, Any]) -> bool:
    return all(a[c][:2] == b[c][:2] and a[c][2:] == pytest.approx(b[c][2:], rel=1e-9, abs=1e-6)
               for c in (False, True))


async def records(engine: AsyncEngine, ws: str) -> tuple[dict[Any, Any], dict[Any, Any]]:
    """Per live number and currency: (orders, revenue) of all its days, from kpi_money's
    records and from kpi_customer_days."""
    async with engine.connect() as conn:
        rows = await fetch(conn, "SELECT data, currency FROM profile.kpi_money WHERE "
                           "workspace_id = $1", ws)
        days = await fetch(conn, "SELECT k.n, d.currency, sum(d.orders), sum(d.revenue) FROM "
                           "profile.kpi_customer_days d JOIN profile.kpi_numbers k ON "
                           "k.workspace_id = d.workspace_id AND k.profile_id = d.profile_id "
                           "WHERE d.workspace_id = $1 GROUP BY 1, 2", ws)
        live = {r[0] for r in await fetch(conn, "SELECT n FROM profile.kpi_numbers WHERE "
                                          "workspace_id = $1", ws)}
    packed: dict[Any, list[Any]] = {}
    for data, currency in rows:
        for n, v, o in np.frombuffer(data, kpis_uplift.RECORD).tolist():
            if n in live:
                held = packed.setdefault((n, currency), [0, 0.0])
                held[0] += o
                held[1] += v
    return ({k: (v[0], round(v[1], 6)) for k, v in packed.items() if v != [0, 0.0]},
            {(r[0], r[1]): (int(r[2]), round(r[3], 6)) for r in days})


async def test_the_packed_read_equals_the_sql_read(engine: AsyncEngine, settings: Settings,
                                                   unique: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kpis_store, "COMPACT_EVERY", 3)  # compactions between the batches
    ws = f"money-{unique}"
    rng = random.Random(11)
    async with engine.begin() as conn:
        await conn.execute(insert(workspace_settings).values(
            workspace_id=ws, conventions=CONV.model_dump(mode="json")))
    users = [f"u{i}" for i in range(24)]
    await run(engine, settings, [ev(ws, D0 - 2 * H, type="identify", user_id=u,
                                    traits={"email": f"{u}@x.io"}) for u in users], D0)
    p = await pids(engine, ws)
    items: list[tuple[datetime, Any]] = []
    orders: list[tuple[str, str, datetime]] = []
    for i in range(160):
        at = D0 + timedelta(minutes=rng.randrange(5 * 24 * 60))
        u = rng.choice(users)
        kind = rng.random()
        if kind < 0.3:  # a send; u16.. are the control group's members
            control = users.index(u) >= 16
            items.append((at, dl(ws, p[u], f"m{i}", "suppressed" if control else "sent", at,
                                 **({"rule": "control_group"} if control else {}))))
        elif kind < 0.75:
            who = rng.choice([u, u, f"anon{rng.randrange(8)}"])
            ident = {"anonymous_id": who} if who.startswith("anon") else {"user_id": who}
            value = round(rng.uniform(1, 300), 2)
            currency = rng.choice(["EUR", "EUR", "EUR", "USD"])
            items.append((at, order(ws, at, "", f"o{i}", value, currency, **ident)))
            orders.append((f"o{i}", who, at))
            if rng.random() < 0.15:  # retried: the same order_id again
                items.append((at + H, order(ws, at + H, "", f"o{i}", value, currency, **ident)))
        elif orders:
            key, who, when = rng.choice(orders)
            ident = {"anonymous_id": who} if who.startswith("anon") else {"user_id": who}
            later = max(at, when + H)
            items.append((later, ev(ws, later, type="track", event="Order Refunded",
                                    properties={"order_id": key, "revenue": 7.5,
                                                "currency": "EUR"}, **ident)))
    # A refund alone (no order of u23's anywhere), and u23 sent a message afterwards.
    items.append((D0 + 30 * H, ev(ws, D0 + 30 * H, type="track", event="Order Refunded",
                                  user_id="u23", properties={"revenue": 12, "currency": "EUR"})))
    items.append((D0 + 31 * H, dl(ws, p["u23"], "m-late", "sent", D0 + 31 * H)))
    # Anonymous shoppers turn out to be known customers (merges), some mid-way.
    for k, (u, at) in enumerate([("u1", D0 + 50 * H), ("u17", D0 + 60 * H),
                                 ("u2", D0 + 70 * H), ("u18", D0 + 130 * H)]):
        items.append((at, ev(ws, at, type="identify", user_id=u, anonymous_id=f"anon{k}")))
    items.sort(key=lambda t: t[0])
    i = 0
    while i < len(items):  # batches of 1..6 in time order
        batch = items[i:i + rng.randrange(1, 7)]
        await run(engine, settings, [e for _, e in batch], batch[-1][0] + H)
        i += len(batch)
    windows = [(date(2026, 11, 2) + timedelta(days=a), date(2026, 11, 2) + timedelta(days=b))
               for a, b in ((0, 0), (1, 1), (2, 2), (0, 4), (1, 3), (0, 1), (4, 6))]

    async def compare() -> None:
        for first, last in windows:
            by_sql, by_numpy = await sums(engine, ws, first, last)
            assert same(by_sql, by_numpy), (first, last, by_sql, by_numpy)
        packed, days = await records(engine, ws)
        assert packed == days

    await compare()
    got = await sums(engine, ws, date(2026, 11, 2), date(2026, 11, 6))
    assert got[0][False][0] > 5 and got[0][True][0] > 3 and got[0][False][2] > 0  # not empty
    async with engine.begin() as conn:  # an erasure of a customer with days
        number = (await fetch(conn, "SELECT n FROM profile.kpi_numbers WHERE workspace_id = "
                              "$1 AND profile_id = $2", ws, p["u3"]))[0][0]
        await commands.erase(conn, settings, ws, p["u3"], D0 + 200 * H)
    await compare()
    async with engine.connect() as conn:  # and their records leave kpi_money
        rows = await fetch(conn, "SELECT data FROM profile.kpi_money WHERE workspace_id = $1",
                           ws)
    assert number not in {int(n) for r in rows for n in np.frombuffer(
        r[0], kpis_uplift.RECORD)["n"]}
    await kpis_rebuild.rebuild(engine, ws, _ignore)
    await compare()


async def _ignore(done: int) -> None:
    assert done > 0


async def test_a_merge_alone_moves_a_refund_only_customer_with_no_bits(
        engine: AsyncEngine, settings: Settings, unique: str) -> None:
    """A loser numbered for its money only (a refund, no order: no bit set anywhere), merged
    by a batch holding no other fact: its day and its kpi_money records become the
    survivor's, and both survivors (one numbered before, one not) count once."""
    ws = f"money-{unique}"
    async with engine.begin() as conn:
        await conn.execute(insert(workspace_settings).values(
            workspace_id=ws, conventions=CONV.model_dump(mode="json")))
    await run(engine, settings, [
        ev(ws, D0, type="identify", user_id="u1", traits={"email": "u1@x.io"}),
        order(ws, D0 + H, "u2", "o2", 40.0),
        ev(ws, D0 + 2 * H, type="track", event="Order Refunded", anonymous_id="a1",
           properties={"revenue": 12.5, "currency": "EUR"}),
        ev(ws, D0 + 2 * H, type="track", event="Order Refunded", anonymous_id="a2",
           properties={"revenue": 5, "currency": "EUR"})], D0 + 3 * H)
    await run(engine, settings, [  # the merges alone: no KPI fact in this batch
        ev(ws, D0 + 4 * H, type="identify", user_id="u1", anonymous_id="a1"),
        ev(ws, D0 + 4 * H, type="identify", user_id="u2", anonymous_id="a2")], D0 + 5 * H)
    p = await pids(engine, ws)
    packed, days = await records(engine, ws)
    assert packed == days
    async with engine.connect() as conn:
        money = {r[0]: (r[1], r[2]) for r in await fetch(
            conn, "SELECT profile_id, sum(orders), round(sum(revenue)::numeric, 2) FROM "
            "profile.kpi_customer_days WHERE workspace_id = $1 GROUP BY 1", ws)}
        numbered = {r[0] for r in await fetch(
            conn, "SELECT profile_id FROM profile.kpi_numbers WHERE workspace_id = $1", ws)}
    assert money == {p["u1"]: (0, -12.5), p["u2"]: (1, 35)}
    assert numbered == {p["u1"], p["u2"]}
    assert len(days) == 2  # one number each, their money in EUR
