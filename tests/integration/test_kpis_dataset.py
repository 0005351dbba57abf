"""The KPI rollups on a fixed dataset, through the consumer's batch function on real Postgres,
against figures computed by hand (the workings are in the comments; docs/metrics.md).

Workspace zone Europe/Berlin (UTC+1 in November). D1 = 2026-11-02, D2 = 2026-11-03 (local).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from services.profile import commands, kpis_read, kpis_rebuild, kpis_state
from services.profile.domain.conventions import Conventions
from services.profile.pipeline import apply_batch
from services.profile.tables import identities, segments, workspace_settings
from shared.contracts.delivery import DeliveryEvent
from shared.contracts.events import Event
from shared.db import create_engine
from shared.settings import Settings
from tests.support import kpis_replay

pytestmark = pytest.mark.integration
D1 = datetime(2026, 11, 2, tzinfo=UTC)  # 01:00 Berlin on D1
D2 = datetime(2026, 11, 3, tzinfo=UTC)
CONV = Conventions(timezone="Europe/Berlin", currency="EUR")
WELCOME = {"key": "welcome", "version": 1}


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings.database_url)
    yield engine
    await engine.dispose()


def ev(ws: str, at: datetime, **call: Any) -> Event:
    return Event.model_validate({"id": f"e-{uuid.uuid4().hex}", "workspace_id": ws,
                                 "timestamp": at, "received_at": at, **call})


def order(ws: str, at: datetime, user: str, order_id: str, value: float,
          currency: str = "EUR", **who: str) -> Event:
    ident = who or {"user_id": user}
    return ev(ws, at, type="track", event="Order Completed",
              properties={"order_id": order_id, "revenue": value, "currency": currency}, **ident)


def dl(ws: str, pid: str, message: str, status: str, at: datetime, **more: Any) -> DeliveryEvent:
    return DeliveryEvent.model_validate({
        "id": f"d-{uuid.uuid4().hex}", "workspace_id": ws, "profile_id": pid,
        "message_id": message, "status": status, "channel": "email", "occurred_at": at,
        "template": "welcome-1", "journey": WELCOME, **more})


async def pids(engine: AsyncEngine, ws: str) -> dict[str, str]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(identities.c.value, identities.c.profile_id).where(
            identities.c.workspace_id == ws, identities.c.kind.in_(("user_id",
                                                                      "anonymous_id"))))).all()
    return dict(rows)


async def run(engine: AsyncEngine, settings: Settings, items: list[Any], now: datetime) -> None:
    async with engine.begin() as conn:
        await apply_batch(conn, items, settings, now)


async def figures(engine: AsyncEngine, ws: str, interval: str = "day", dim: str = "",
                  key: str = "", segment: str = "", first: date = date(2026, 11, 2),
                  last: date = date(2026, 11, 3)) -> dict[str, Any]:
    w = kpis_read.Window(ws, first, last, interval, dim, key, segment)
    async with engine.connect() as conn:
        return await kpis_read.answer(conn, w, CONV)


async def load(engine: AsyncEngine, settings: Settings, ws: str) -> dict[str, str]:
    async with engine.begin() as conn:
        await conn.execute(insert(workspace_settings).values(
            workspace_id=ws, conventions=CONV.model_dump(mode="json")))
        await conn.execute(insert(segments).values(
            workspace_id=ws, key="pro", name="Pro", reporting=True,
            rule={"field": "profile.traits.plan", "op": "eq", "value": "pro"}))
    h = timedelta(hours=1)
    await run(engine, settings, [
        ev(ws, D1 + 7 * h, type="identify", user_id="a",
           traits={"email": "a@x.io", "name": "Ann", "plan": "pro"}),
        ev(ws, D1 + 7 * h, type="identify", user_id="b", traits={"email": "b@x.io"}),
        ev(ws, D1 + 7 * h, type="identify", user_id="c", traits={"email": "c@x.io"}),
        ev(ws, D1 + 7 * h, type="identify", user_id="e", traits={"email": "e@x.io"}),
        ev(ws, D1 + 7 * h, type="track", event="Page Viewed", anonymous_id="bweb"),
    ], D1 + 8 * h)
    p = await pids(engine, ws)
    async with engine.begin() as conn:  # D1's state: 5 profiles, all new that day
        await kpis_state.take(conn, ws, CONV, D1 + 8 * h)
    a, b, c, e = p["a"], p["b"], p["c"], p["e"]
    await run(engine, settings, [
        dl(ws, a, "m-a", "sent", D1 + 9 * h), dl(ws, a, "m-a", "delivered", D1 + 9 * h),
        dl(ws, a, "m-a", "opened", D1 + 10 * h), dl(ws, a, "m-a", "clicked", D1 + 10 * h),
        dl(ws, a, "m-a", "opened", D1 + 11 * h),  # a second open of the same message
        dl(ws, b, "m-b", "sent", D1 + 9 * h), dl(ws, b, "m-b", "delivered", D1 + 9 * h),
        dl(ws, b, "m-b", "opened", D1 + 12 * h),
        dl(ws, c, "m-c", "sent", D1 + 9 * h), dl(ws, c, "m-c", "bounced", D1 + 9 * h),
        dl(ws, e, "m-e", "sent", D1 + 9 * h),
        dl(ws, a, "m-t", "sent", D1 + 9 * h, test=True),  # a test send: never counted
        dl(ws, a, "m-t", "clicked", D1 + 9 * h, test=True),
        dl(ws, a, "m-h", "held", D1 + 9 * h),  # held by the contact policy: not a send
        ev(ws, D1 + 13 * h, type="track", event="NPS Survey Submitted", user_id="b",
           properties={"score": 3}),
    ], D1 + 14 * h)
    await run(engine, settings, [
        order(ws, D1 + 20 * h, "a", "o1", 100),
        order(ws, D1 + 20 * h + timedelta(minutes=1), "a", "o1", 100),  # retried: same id
        order(ws, D1 + 20 * h, "e", "o4", 10),
        # 23:30 UTC is 00:30 on D2 in Berlin: a D2 order.
        order(ws, D1 + timedelta(hours=23, minutes=30), "", "o2", 50, anonymous_id="bweb"),
    ], D1 + timedelta(hours=23, minutes=40))
    async with engine.begin() as conn:  # E is erased: a late order must not bring them back
        await commands.erase(conn, settings, ws, e, D2)
    await run(engine, settings, [
        # bweb turns out to be b: the two profiles merge, o2 joins b's open of m-b (11.5 h
        # before it, within the 1-day open window) and is attributed to it.
        ev(ws, D2 + 8 * h, type="identify", user_id="b", anonymous_id="bweb"),
        order(ws, D2 + 8 * h, "e", "o5", 999),
        dl(ws, a, "m-a2", "sent", D2 + 9 * h, journey=None, template="promo", broadcast="bf"),
        dl(ws, a, "m-a2", "delivered", D2 + 9 * h, journey=None, template="promo",
           broadcast="bf"),
        dl(ws, a, "m-a2", "clicked", D2 + 10 * h, journey=None, template="promo",
           broadcast="bf"),
        dl(ws, b, "m-b", "unsubscribed", D2 + 10 * h),
        ev(ws, D2 + 10 * h, type="track", event="Order Refunded", user_id="a",
           properties={"order_id": "o1", "revenue": 30, "currency": "EUR"}),
        order(ws, D2 + 12 * h, "c", "o3", 20, currency="USD"),
        ev(ws, D2 + 13 * h, type="track", event="NPS Survey Submitted", user_id="a",
           properties={"score": 9}),
        ev(ws, D2 + 13 * h, type="track", event="NPS Survey Submitted", user_id="c",
           properties={"score": 10}),
    ], D2 + 14 * h)
    async with engine.begin() as conn:
        await kpis_state.take(conn, ws, CONV, D2 + 17 * h)
    return p


async def test_every_figure_of_the_fixed_dataset(engine: AsyncEngine, settings: Settings,
                                                 unique: str) -> None:
    ws = f"kpi-{unique}"
    await load(engine, settings, ws)
    got = await figures(engine, ws)
    t = got["totals"]
    assert got["window"] | {"filters": None} == {
        "from": "2026-11-02", "to": "2026-11-03", "interval": "day",
        "timezone": "Europe/Berlin", "filters": None, "whole_intervals": True,
        "distinct": "exact"}
    # Sends m-a m-b m-c m-e (D1), m-a2 (D2); the test send and the held one never count.
    # Delivered m-a m-b m-a2; opens m-a (twice: once), m-b, m-a2 (a click is an open);
    # clicks m-a m-a2. Reached a, b, c (e was erased: out of the distinct sets) of 3 profiles.
    assert t["communication"] == {
        "sent": 5, "delivered": 3, "bounced": 1, "failed": 0, "complained": 0,
        "unsubscribed": 1, "unique_opens": 3, "unique_clicks": 2, "open_rate": 1.0,
        "click_rate": 0.666667, "click_to_open": 0.666667, "unsubscribe_rate": 0.333333,
        "bounce_rate": 0.2, "complaint_rate": 0.0, "reached": 3, "reach": 1.0}
    # EUR orders o1 (100, once though sent twice), o4 (10, e's: the counters keep it), o2 (50,
    # D2 in Berlin); refund 30 on D2: 160 - 30 = 130. o3 is USD: apart. o5 came after e's
    # erasure: never counted. Customers a, b (merged with bweb), c; e erased.
    assert t["sales"] == {
        "currency": "EUR", "orders": 3, "customers": 3, "revenue": 130.0,
        "gross_revenue": 160.0, "refunds": 1, "refunded": 30.0, "aov": 43.33,
        "purchase_frequency": 1.0, "repeat_rate": 0.0,
        "other_currencies": {"USD": {"orders": 1, "revenue": 20.0}},
        "active_customers": 3, "active_share": 1.0}
    # o1 -> m-a (clicked 10 h before), o2 -> m-b (opened 11.5 h before, after the merge),
    # o4: no touch. 100 + 50 - 30 (o1's refund) = 120 of 130.
    assert t["attribution"] == {"orders": 2, "revenue": 120.0, "crm_share": 0.923077}
    # NPS: b 3 (D1), a 9, c 10 (D2): (2 - 1) / 3.
    assert t["nps"] == {"responses": 3, "promoters": 2, "passives": 0, "detractors": 1,
                        "score": 33.33}
    assert t["retention"]["retention_rate"] is None  # nobody ordered the two days before
    assert t["retention"]["cohorts"] == [{"month": "2026-11", "customers": 3, "still_ordering": [
        {"months_since": 0, "customers": 3, "share": 1.0}]}]
    # Per series entry, against as many days before it: D1's customers are a (e erased);
    # D2's are b and c, so of D1's one customer none ordered again on D2.
    assert [s["retention"] for s in got["series"]] == [
        {"previous_customers": 0, "retained_customers": 0, "retention_rate": None,
         "churn_rate": None},
        {"previous_customers": 1, "retained_customers": 0, "retention_rate": 0.0,
         "churn_rate": 1.0}]
    # A month's entry also carries the cohort of customers whose first order is that month.
    november = await figures(engine, ws, interval="month", first=date(2026, 11, 1),
                             last=date(2026, 11, 30))
    assert november["series"][0]["retention"] == {
        "previous_customers": 0, "retained_customers": 0, "retention_rate": None,
        "churn_rate": None, "cohort": t["retention"]["cohorts"][0]}
    # D2's snapshot: a, b, c. c's address bounced, b unsubscribed: a alone is reachable.
    # New profiles: 5 on D1 (a b c e bweb), none on D2.
    assert t["base"] == {
        "profiles": 3, "new_profiles": 5, "known": 3,
        "reachable": {"email": 1, "sms": 0, "push": 0},
        "completeness": {"email": 1.0, "phone": 0.0, "name": 0.333333, "timezone": 0.0},
        "unsubscribed": 1, "undeliverable": 1}
    # Stages: a, b and c one order each (a's retried o1 counts once on the profile too).
    # Moves, as the profiles' own lifecycle changes: none -> new for a, e, bweb (D2 in
    # Berlin), b (the merge hands bweb's order to b's record), c (D2).
    assert t["lifecycle"]["stages"] == {"new": 3, "active": 0, "reactivated": 0,
                                        "at_risk": 0, "lapsed": 0, "churned": 0}
    assert t["lifecycle"]["moves"] == {"none>new": 5}
    # LTV historic on the profiles: a 100 - 30, b 50, c 20 (USD: the profile sums values).
    assert t["value"] == {"customers": 3, "ltv_historic": {"mean": 46.67, "median": 50.0},
                          "ltv_predicted": {"total": None, "mean": None},
                          "churn_risk": {"0-0.2": 0, "0.2-0.4": 0, "0.4-0.6": 0,
                                         "0.6-0.8": 0, "0.8-1": 0}}
    d1, d2 = got["series"]
    assert (d1["start"], d2["start"]) == ("2026-11-02", "2026-11-03")
    assert {k: d1["communication"][k] for k in ("sent", "delivered", "unique_opens",
                                                "unique_clicks", "reached")} == \
        {"sent": 4, "delivered": 2, "unique_opens": 2, "unique_clicks": 1, "reached": 3}
    assert {k: d2["communication"][k] for k in ("sent", "delivered", "unique_opens",
                                                "unique_clicks", "unsubscribed", "reached")} == \
        {"sent": 1, "delivered": 1, "unique_opens": 1, "unique_clicks": 1, "unsubscribed": 1,
         "reached": 1}
    assert (d1["sales"]["orders"], d1["sales"]["revenue"], d1["sales"]["customers"]) == \
        (2, 110.0, 1)
    assert (d2["sales"]["orders"], d2["sales"]["revenue"], d2["sales"]["customers"],
            d2["sales"]["refunded"]) == (1, 20.0, 2, 30.0)
    assert d1["attribution"] == {"orders": 1, "revenue": 100.0, "crm_share": 0.909091}
    assert d2["attribution"] == {"orders": 1, "revenue": 20.0, "crm_share": 1.0}
    assert (d1["nps"]["score"], d2["nps"]["score"]) == (-100.0, 100.0)
    assert (d1["base"]["profiles"], d1["base"]["new_profiles"],
            d2["base"]["profiles"], d2["base"]["new_profiles"]) == (5, 5, 3, 0)
    # By journey / template / broadcast: welcome carried m-a m-b m-c m-e and both attributed
    # orders; the broadcast bf (m-a2) none.
    welcome = got["by"]["journey"]["welcome"]
    assert (welcome["communication"]["sent"], welcome["communication"]["unique_opens"],
            welcome["attribution"]) == (4, 2, {"orders": 2, "revenue": 120.0,
                                               "crm_share": 0.923077})
    assert got["by"]["template"]["promo"]["communication"]["unique_clicks"] == 1
    assert got["by"]["broadcast"]["bf"]["attribution"]["orders"] == 0
    assert set(got["by"]["channel"]) == {"email"}


async def test_filters_segments_weeks_and_rebuild(engine: AsyncEngine, settings: Settings,
                                                  unique: str) -> None:
    ws = f"kpi-{unique}"
    await load(engine, settings, ws)
    journey = await figures(engine, ws, dim="journey", key="welcome")
    c = journey["totals"]["communication"]
    assert (c["sent"], c["delivered"], c["unique_opens"], c["unique_clicks"], c["reached"]) \
        == (4, 2, 2, 1, 3)
    assert journey["totals"]["attribution"]["revenue"] == 120.0
    bf = await figures(engine, ws, dim="broadcast", key="bf")
    assert (bf["totals"]["communication"]["sent"], bf["totals"]["communication"]["reached"],
            bf["totals"]["attribution"]["orders"]) == (1, 1, 0)
    # Segment `pro` (reporting): a only. m-a and m-a2, o1 (100, refund 30), NPS 9.
    pro = await figures(engine, ws, segment="pro")
    t = pro["totals"]
    assert (t["communication"]["sent"], t["communication"]["unique_clicks"],
            t["communication"]["reached"]) == (2, 2, 1)
    assert (t["sales"]["orders"], t["sales"]["revenue"], t["sales"]["customers"]) == \
        (1, 70.0, 1)
    assert t["attribution"]["revenue"] == 70.0 and t["nps"]["score"] == 100.0
    assert t["base"]["profiles"] == 1
    # One ISO week (Mon 2 Nov .. Sun 8 Nov): the two days are not a whole interval.
    week = await figures(engine, ws, interval="week")
    assert [s["start"] for s in week["series"]] == ["2026-11-02"]
    assert week["window"]["whole_intervals"] is False
    assert week["series"][0]["communication"]["reached"] == 3
    # Whole intervals read their sets' counters (kept right through the merge and the
    # erasure); a window of several reads the exact union of its sets.
    for interval, first, last in (("week", date(2026, 11, 2), date(2026, 11, 8)),
                                  ("month", date(2026, 11, 1), date(2026, 11, 30)),
                                  ("day", date(2026, 10, 20), date(2026, 11, 20))):
        got = await figures(engine, ws, interval=interval, first=first, last=last)
        whole = [s for s in got["series"] if s["communication"]["reached"]]
        assert [(s["communication"]["reached"], s["sales"]["customers"]) for s in whole] == \
            ([(3, 3)] if interval != "day" else [(3, 1), (1, 2)]), interval
        assert (got["totals"]["communication"]["reached"], got["totals"]["sales"]["customers"],
                got["totals"]["sales"]["repeat_rate"]) == (3, 3, 0.0), interval
    # Rebuild from the stored history: e's events were erased with e (m-e and o4 gone);
    # everything else comes back the same.
    before = await figures(engine, ws)
    await kpis_rebuild.rebuild(engine, ws, _ignore)
    after = await figures(engine, ws)
    assert after["totals"]["communication"] == before["totals"]["communication"] | {
        "sent": 4, "bounce_rate": 0.25}
    assert after["totals"]["sales"] | {"orders": 3, "revenue": 130.0, "gross_revenue": 160.0,
                                       "aov": 43.33, "purchase_frequency": 1.0} == \
        before["totals"]["sales"]
    assert (after["totals"]["sales"]["orders"], after["totals"]["sales"]["revenue"]) == \
        (2, 120.0)
    assert after["totals"]["attribution"] == before["totals"]["attribution"] | {
        "crm_share": 1.0}
    assert after["totals"]["nps"] == before["totals"]["nps"]
    assert after["totals"]["lifecycle"]["moves"] == before["totals"]["lifecycle"]["moves"]
    # The sets and their counters come back too: a whole week, and the segment.
    week = await figures(engine, ws, interval="week", first=date(2026, 11, 2),
                         last=date(2026, 11, 8))
    assert (week["series"][0]["communication"]["reached"],
            week["series"][0]["sales"]["customers"]) == (3, 3)
    pro = await figures(engine, ws, segment="pro")
    assert (pro["totals"]["communication"]["reached"], pro["totals"]["sales"]["customers"],
            pro["series"][0]["communication"]["reached"]) == (1, 1, 1)
    # Row for row what the consumer's own writer makes of the same history met in time order.
    rebuilt = await kpis_replay.rollups(engine, ws)
    assert rebuilt["kpi_counts"] and rebuilt["kpi_orders"] and rebuilt["kpi_bits"]
    await kpis_replay.replay(engine, ws)
    assert await kpis_replay.rollups(engine, ws) == rebuilt


async def _ignore(done: int) -> None:
    assert done > 0


async def test_a_late_click_re_decides_the_order_on_event_time(
        engine: AsyncEngine, settings: Settings, unique: str) -> None:
    ws = f"kpi-{unique}"
    h = timedelta(hours=1)
    await run(engine, settings, [ev(ws, D1, type="identify", user_id="u",
                                    traits={"email": "u@x.io"})], D1)
    u = (await pids(engine, ws))["u"]
    await run(engine, settings, [order(ws, D1 + 10 * h, "u", "o1", 80)], D1 + 10 * h)
    w = kpis_read.Window(ws, date(2026, 11, 1), date(2026, 11, 3), "day", "", "", "")

    async def attributed() -> dict[str, Any]:
        async with engine.connect() as conn:
            got = await kpis_read.answer(conn, w, Conventions())
        return {k: v["attribution"]["orders"] for k, v in got["by"]["template"].items()} | {
            "total": got["totals"]["attribution"]["revenue"]}
    assert await attributed() == {"total": 0.0}
    # A click two hours before the order arrives after it: the order is now m1's.
    await run(engine, settings, [dl(ws, u, "m1", "clicked", D1 + 8 * h, template="t1")],
              D1 + 11 * h)
    assert await attributed() == {"t1": 1, "total": 80.0}
    # A later click, still before the order, arrives last: it takes the order over.
    # A click after the order changes nothing.
    await run(engine, settings, [dl(ws, u, "m2", "clicked", D1 + 9 * h, template="t2"),
                                 dl(ws, u, "m3", "clicked", D1 + 12 * h, template="t3")],
              D1 + 13 * h)
    assert await attributed() == {"t1": 0, "t2": 1, "t3": 0, "total": 80.0}


async def test_a_merge_folds_two_customers_of_one_day_into_one(
        engine: AsyncEngine, settings: Settings, unique: str) -> None:
    ws = f"kpi-{unique}"
    h = timedelta(hours=1)
    await run(engine, settings, [order(ws, D1 + 9 * h, "", "oa", 10, anonymous_id="x1"),
                                 order(ws, D1 + 10 * h, "", "ob", 20, anonymous_id="y1")],
              D1 + 11 * h)

    async def customers(first: date, last: date) -> tuple[Any, ...]:
        w = kpis_read.Window(ws, first, last, "day", "", "", "")
        async with engine.connect() as conn:
            got = await kpis_read.answer(conn, w, Conventions())
        return (got["totals"]["sales"]["customers"], got["totals"]["sales"]["repeat_rate"],
                got["series"][0]["sales"]["customers"])
    day = date(2026, 11, 2)
    assert await customers(day, day) == (2, 0.0, 2)
    await run(engine, settings, [
        ev(ws, D1 + 12 * h, type="identify", anonymous_id="x1", traits={"email": "q@x.io"}),
        ev(ws, D1 + 12 * h, type="identify", anonymous_id="y1", traits={"email": "q@x.io"})],
        D1 + 13 * h)
    # One person with two orders: the day's counter (one whole day) and the union of a
    # two-day window agree.
    assert await customers(day, day) == (1, 1.0, 1)
    assert await customers(day, day + timedelta(days=1)) == (1, 1.0, 1)


async def test_repeat_customers_over_days_and_within_a_day(
        engine: AsyncEngine, settings: Settings, unique: str) -> None:
    """The people bitmaps' repeat fold: u orders on two days (a repeater of the two-day
    window, of neither day), v twice on one day (a repeater of that day and of the window).
    Workspace zone UTC."""
    ws = f"kpi-{unique}"
    h = timedelta(hours=1)
    await run(engine, settings, [order(ws, D1 + 10 * h, "u", "o1", 10)], D1 + 11 * h)
    await run(engine, settings, [order(ws, D2 + 10 * h, "u", "o2", 20),
                                 order(ws, D2 + 11 * h, "v", "o3", 30),
                                 order(ws, D2 + 12 * h, "v", "o4", 40)], D2 + 13 * h)

    async def sales(first: date, last: date) -> Any:
        w = kpis_read.Window(ws, first, last, "day", "", "", "")
        async with engine.connect() as conn:
            return await kpis_read.answer(conn, w, Conventions())
    d1, d2 = date(2026, 11, 2), date(2026, 11, 3)
    both = await sales(d1, d2)
    assert (both["totals"]["sales"]["customers"], both["totals"]["sales"]["repeat_rate"]) == \
        (2, 1.0)
    assert [(e["sales"]["customers"], e["sales"]["repeat_rate"]) for e in both["series"]] == \
        [(1, 0.0), (2, 0.5)]
    # D2 against D1: u ordered on D1 and again on D2.
    second = await sales(d2, d2)
    assert (second["totals"]["retention"]["previous_customers"],
            second["totals"]["retention"]["retained_customers"]) == (1, 1)
    assert both["series"][1]["retention"]["retained_customers"] == 1
    # A week that holds both days (partial: the window is two of its days) agrees.
    week = await _week(engine, ws, d1, d2)
    assert (week["series"][0]["sales"]["customers"],
            week["series"][0]["sales"]["repeat_rate"]) == (2, 1.0)


async def _week(engine: AsyncEngine, ws: str, first: date, last: date) -> Any:
    w = kpis_read.Window(ws, first, last, "week", "", "", "")
    async with engine.connect() as conn:
        return await kpis_read.answer(conn, w, Conventions())


async def test_a_batch_waits_while_a_rebuild_holds_the_workspace(
        engine: AsyncEngine, settings: Settings, unique: str) -> None:
    ws = f"kpi-{unique}"
    async with engine.begin() as rebuild:  # what kpis_rebuild.rebuild holds
        await rebuild.execute(text("SELECT pg_advisory_xact_lock(hashtext('profile-kpis:' "
                                   "|| :w))"), {"w": ws})
        batch = asyncio.create_task(run(engine, settings, [order(ws, D1, "u", "o1", 5)], D1))
        await asyncio.sleep(1.0)
        assert not batch.done()
    await asyncio.wait_for(batch, 30)
    got = await figures(engine, ws, first=date(2026, 11, 1), last=date(2026, 11, 2))
    assert got["totals"]["sales"]["orders"] == 1
