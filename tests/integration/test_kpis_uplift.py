"""`uplift.crm` on a fixed dataset, through the consumer's batch function on real Postgres,
against figures computed by hand (workings in the comments; docs/metrics.md#upliftcrm).

Workspace zone UTC, currency EUR. Window D1..D2 = 2026-11-02..2026-11-03.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from services.profile import commands, kpis_rebuild, kpis_uplift
from services.profile.domain.conventions import Conventions
from services.profile.tables import workspace_settings
from shared.settings import Settings
from shared.uplift import newcombe
from tests.integration.test_kpis_dataset import dl, engine, ev, order, pids, run

pytestmark = pytest.mark.integration
__all__ = ["engine"]  # the fixture
D1 = datetime(2026, 11, 2, tzinfo=UTC)
D2 = D1 + timedelta(days=1)
H = timedelta(hours=1)
CONV = Conventions(timezone="UTC", currency="EUR")


def control(ws: str, pid: str, message: str, at: datetime) -> Any:
    return dl(ws, pid, message, "suppressed", at, rule="control_group")


async def load(engine: AsyncEngine, settings: Settings, ws: str) -> dict[str, str]:
    """Treated (sent a message in the window): t1 t2 t3 t4. Control (a send suppressed by
    `control_group` in the window): k1 k2 k3; k4 only before the window. x1 is neither."""
    async with engine.begin() as conn:
        await conn.execute(insert(workspace_settings).values(
            workspace_id=ws, conventions=CONV.model_dump(mode="json")))
    people = ["t1", "t2", "t3", "t4", "k1", "k2", "k3", "k4", "x1"]
    await run(engine, settings, [ev(ws, D1 - 2 * H, type="identify", user_id=u,
                                    traits={"email": f"{u}@x.io"}) for u in people], D1)
    p = await pids(engine, ws)
    await run(engine, settings, [
        control(ws, p["k4"], "m-k4", D1 - H),  # a member, but not targeted in the window
        *(dl(ws, p[t], f"m-{t}", "sent", D1 + H) for t in ("t1", "t2", "t3", "t4")),
        control(ws, p["k1"], "m-k1", D1 + H), control(ws, p["k2"], "m-k2", D1 + H),
        control(ws, p["k3"], "m-k3", D2 + H),
        control(ws, p["k3"], "m-k3b", D2 + 2 * H),  # twice: still one member
        # k1 also gets a transactional message: a member is never in the treated arm.
        dl(ws, p["k1"], "m-r", "sent", D1 + 2 * H, journey=None, template="receipt"),
        dl(ws, p["t4"], "m-t4b", "suppressed", D1 + 2 * H, rule="consent"),  # not control
        dl(ws, p["x1"], "m-x1", "sent", D1 + H, test=True),  # a test send: not treated
    ], D1 + 3 * H)
    await run(engine, settings, [
        order(ws, D1 + 5 * H, "t1", "o1", 100), order(ws, D2 + 5 * H, "t1", "o2", 50),
        order(ws, D1 + 6 * H, "t2", "o3", 40),
        order(ws, D1 + 7 * H, "t4", "o4", 60),
        order(ws, D1 + 7 * H + timedelta(minutes=1), "t4", "o4", 60),  # retried: same id
        order(ws, D1 + 8 * H, "k1", "o5", 30),
        order(ws, D2 + 8 * H, "k3", "o6", 10),
        order(ws, D2 + 30 * H, "k2", "o7", 70),  # after the window
        order(ws, D1 + 9 * H, "x1", "o8", 500),  # in no arm
        order(ws, D1 + 9 * H, "k4", "o9", 80),  # k4 is not in the window's control arm
    ], D2 + 31 * H)
    await run(engine, settings, [  # t1's refund of 30 on o1, on D2: net 120
        ev(ws, D2 + 10 * H, type="track", event="Order Refunded", user_id="t1",
           properties={"order_id": "o1", "revenue": 30, "currency": "EUR"})], D2 + 32 * H)
    return p


async def crm(engine: AsyncEngine, ws: str, first: date = date(2026, 11, 2),
              last: date = date(2026, 11, 3)) -> dict[str, Any]:
    async with engine.connect() as conn:
        return await kpis_uplift.crm(conn, ws, first, last, "", "EUR")


async def test_crm_uplift_of_the_fixed_dataset(engine: AsyncEngine, settings: Settings,
                                               unique: str) -> None:
    ws = f"upl-{unique}"
    p = await load(engine, settings, ws)
    got = await crm(engine, ws)
    # Treated: t1 120 (150 - 30), t2 40, t3 0, t4 60 (o4 once): n 4, 3 converted, 220,
    # mean 55, variance (65² + 15² + 55² + 5²) / 3 = 7500 / 3 = 2500.
    assert got["treated"] == {"customers": 4, "converted": 3, "conversion": 0.75,
                              "revenue": 220.0, "revenue_per_customer": 55.0}
    # Control: k1 30, k2 0 (o7 is after the window), k3 10: n 3, 2 converted, 40,
    # mean 13.333333, variance (16.667² + 13.333² + 3.333²) / 2 = 700 / 3 = 233.333.
    assert got["control"] == {"customers": 3, "converted": 2, "conversion": 2 / 3,
                              "revenue": 40.0, "revenue_per_customer": 13.333333}
    assert (got["treated_size"], got["control_size"], got["currency"]) == (4, 3, "EUR")
    assert got["uplift"] == 0.083333  # 0.75 - 0.666667
    assert got["ci_method"] == "newcombe"
    low, high = newcombe((3, 4), (2, 3))  # unit-tested against Newcombe's published values
    assert got["ci95"] == [round(low, 6), round(high, 6)]
    # Welch: se² = 2500/4 + 233.333/3 = 702.7778, se = 26.509956;
    # df = 702.7778² / (625² / 3 + 77.7778² / 2) = 3.707; t(0.975, 3.707) lies between the
    # tables' 3.182 (df 3) and 2.776 (df 4).
    money = got["revenue_per_customer"]
    assert money["difference"] == 41.666667 and money["df"] == 3.707
    assert money["ci_method"] == "welch"
    half = (money["ci95"][1] - money["ci95"][0]) / 2
    assert 2.776 * 26.509956 < half < 3.182 * 26.509956
    assert money["ci95"][0] + half == pytest.approx(41.666667, abs=1e-5)
    # One day only (D2): treated are those sent on D2 (nobody), control k3.
    d2 = await crm(engine, ws, date(2026, 11, 3), date(2026, 11, 3))
    assert (d2["treated_size"], d2["control_size"], d2["control"]["revenue"]) == (0, 1, 10.0)
    assert d2["uplift"] is None and d2["revenue_per_customer"]["ci95"] is None
    # A whole month reads the month sets: k4 (suppressed on 1 Nov) joins the control arm with
    # o9 (80), and k2's o7 (4 Nov) counts: 30 + 70 + 10 + 80 = 190.
    month = await crm(engine, ws, date(2026, 11, 1), date(2026, 11, 30))
    assert (month["treated_size"], month["control_size"], month["control"]["revenue"]) == \
        (4, 4, 190.0)
    # Profile knows the members: k1..k4 (k4 from before the window).
    async with engine.connect() as conn:
        members = set((await conn.execute(text(
            "SELECT profile_id FROM profile.kpi_control WHERE workspace_id = :w"),
            {"w": ws})).scalars())
    assert members == {p["k1"], p["k2"], p["k3"], p["k4"]}

    # Rebuild from the stored history: the same figures.
    await kpis_rebuild.rebuild(engine, ws, _ignore)
    assert await crm(engine, ws) == got

    # Erasure: k1 leaves the control group, the sets and their days.
    async with engine.begin() as conn:
        await commands.erase(conn, settings, ws, p["k1"], D2 + 40 * H)
    erased = await crm(engine, ws)
    assert erased["control"] == {"customers": 2, "converted": 1, "conversion": 0.5,
                                 "revenue": 10.0, "revenue_per_customer": 5.0}
    async with engine.connect() as conn:
        left = (await conn.execute(text(
            "SELECT (SELECT count(*) FROM profile.kpi_control WHERE profile_id = :p) + "
            "(SELECT count(*) FROM profile.kpi_customer_days WHERE profile_id = :p)"),
            {"p": p["k1"]})).scalar_one()
    assert left == 0


async def test_a_merge_into_a_control_member_folds_the_days(
        engine: AsyncEngine, settings: Settings, unique: str) -> None:
    ws = f"upl-{unique}"
    async with engine.begin() as conn:
        await conn.execute(insert(workspace_settings).values(
            workspace_id=ws, conventions=CONV.model_dump(mode="json")))
    await run(engine, settings, [
        ev(ws, D1, type="identify", user_id="k", traits={"email": "k@x.io"}),
        order(ws, D1 + H, "", "oa", 10, anonymous_id="web")], D1 + 2 * H)
    p = await pids(engine, ws)
    await run(engine, settings, [control(ws, p["k"], "m-k", D1 + 2 * H),
                                 order(ws, D1 + 3 * H, "k", "ob", 5)], D1 + 4 * H)
    # The anonymous shopper turns out to be k: one control member with 15 of revenue.
    await run(engine, settings, [ev(ws, D1 + 5 * H, type="identify", user_id="k",
                                    anonymous_id="web")], D1 + 6 * H)
    got = await crm(engine, ws, date(2026, 11, 2), date(2026, 11, 2))
    assert got["control"] == {"customers": 1, "converted": 1, "conversion": 1.0,
                              "revenue": 15.0, "revenue_per_customer": 15.0}
    assert got["treated_size"] == 0


async def _ignore(done: int) -> None:
    assert done > 0
