"""Metrics, RFM, lifecycle and segments through the real broker and Postgres, hand-checked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from profile_support import ProfileWorld, eventually, profile_world

from services.profile.api import segments as segments_api
from shared.settings import Settings

pytestmark = pytest.mark.integration

# name: (days since the last order, orders 10 days apart, value of each order)
DATASET = {"a": (1, 1, 50), "b": (5, 5, 100), "c": (20, 3, 100), "d": (45, 4, 100),
           "e": (200, 2, 100)}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(settings: Settings, topics: list[str]) -> AsyncIterator[ProfileWorld]:
    async for w in profile_world(settings):
        yield w


def orders(user: str, last_days_ago: float, n: int, value: float) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [{"type": "track", "event": "Order Completed", "user_id": user,
             "properties": {"revenue": value, "order_id": f"{user}-{i}"},
             "timestamp": (now - timedelta(days=last_days_ago + 10 * i)).isoformat()}
            for i in range(n)]


async def _metrics(world: ProfileWorld, h: dict[str, str], user: str,
                   orders_expected: int) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        p = await world.lookup(h, user_id=user)
        return p if p and p["metrics"]["order_count"] == orders_expected else None
    return await eventually(probe)


async def test_rfm_and_lifecycle_on_a_known_dataset(world: ProfileWorld) -> None:
    ws, h = await world.workspace()
    for user, (last, n, value) in DATASET.items():
        await world.send(ws, *orders(user, last, n, value))
    await world.send(ws, {"type": "track", "event": "Order Refunded", "user_id": "b",
                          "properties": {"total": 50}},
                     {"type": "track", "event": "NPS Survey Submitted", "user_id": "b",
                      "properties": {"score": 9}})
    b = await _metrics(world, h, "b", 5)
    b = await eventually(lambda: _with(world, h, "b", lambda p: p["metrics"]["nps_score"] == 9))
    m = b["metrics"]
    assert (m["gross_revenue"], m["revenue"], m["refunded"]) == (500, 450, 50)
    assert m["average_order_value"] == 90 and m["mean_interpurchase_days"] == 10
    assert 4.9 < m["days_since_last_order"] < 5.1 and m["nps_category"] == "promoter"
    for user in DATASET:
        await _metrics(world, h, user, DATASET[user][1])

    r = await world.http.post("/v1/profile-settings/recompute", headers=h)
    assert r.status_code == 200 and r.json()["customers"] == 5, r.text
    expected = {"a": ("New Customers", "511", "new"), "b": ("Loyal", "455", "active"),
                "c": ("Need Attention", "333", "at_risk"), "d": ("At Risk", "244", "lapsed"),
                "e": ("Hibernating", "122", "churned")}
    for user, (segment, score, stage) in expected.items():
        p = await world.lookup(h, user_id=user)
        assert p is not None
        assert (p["rfm_segment"], p["metrics"]["rfm_score"], p["lifecycle_stage"]) == \
            (segment, score, stage), user
    found = (await world.http.get("/v1/profiles", headers=h,
                                  params={"rfm_segment": "Loyal"})).json()["items"]
    assert [p["user_id"] for p in found] == ["b"]
    changes = await world.changes(ws, lambda cs: sum(c["kind"] == "rfm_changed"
                                                     for c in cs) >= 5)
    rfm_moves = {c["profile"]["user_id"]: c["data"] for c in changes if c["kind"] == "rfm_changed"}
    assert rfm_moves["b"] == {"from": None, "to": "Loyal"}
    stages = {(c["profile"]["user_id"], c["data"]["to"]) for c in changes
              if c["kind"] == "lifecycle_changed"}
    assert {("c", "at_risk"), ("d", "lapsed"), ("e", "churned")} <= stages
    # A lapsed customer who orders again is reactivated, at once.
    await world.send(ws, {**orders("d", 0, 1, 100)[0], "properties": {  # a new order_id
        "revenue": 100, "order_id": "d-again"}})
    d = await _metrics(world, h, "d", 5)
    assert d["lifecycle_stage"] == "reactivated"


async def _with(world: ProfileWorld, h: dict[str, str], user: str, check: Any) -> Any:
    p = await world.lookup(h, user_id=user)
    return p if p and check(p) else None


async def test_churn_and_ltv_predictions_once_there_is_enough_data(world: ProfileWorld) -> None:
    ws, h = await world.workspace()
    for i in range(30):
        await world.send(ws, *orders(f"c{i}", 3 + 7 * (i % 9), 1 + i % 5, 20 + i))
    await _metrics(world, h, "c29", 5)
    r = await world.http.post("/v1/profile-settings/recompute", headers=h)
    assert r.status_code == 200 and r.json()["model"]["bgnbd"] is not None, r.text
    p = (await world.http.get("/v1/profiles/lookup", params={"user_id": "c4"},
                              headers=h)).json()
    m = p["metrics"]
    assert 0 <= m["churn_risk"] <= 1 and m["predicted_ltv"] > 0 and m["expected_orders"] > 0


async def test_segment_enter_and_exit_live(world: ProfileWorld) -> None:
    ws, h = await world.workspace()
    rule = {"all": [{"field": "profile.traits.plan", "op": "eq", "value": "pro"},
                    {"performed": {"event": "Order Completed", "op": "gte", "count": 2,
                                   "within": "P90D"}}]}
    r = await world.http.put("/v1/segments/pro-repeat", headers=h,
                             json={"name": "Pro repeat buyers", "rule": rule})
    assert r.status_code == 200 and r.json()["count"] == 0, r.text
    bad = await world.http.put("/v1/segments/x", headers=h,
                               json={"name": "x", "rule": {"field": "profile.a", "op": "nope"}})
    assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"
    await world.send(ws, {"type": "identify", "user_id": "s1", "traits": {"plan": "pro"}},
                     *orders("s1", 1, 1, 10))
    await _metrics(world, h, "s1", 1)
    assert (await world.lookup(h, user_id="s1"))["segments"] == []
    await world.send(ws, *orders("s1", 0, 1, 10))
    p = await eventually(lambda: _with(world, h, "s1", lambda p: p["segments"] == ["pro-repeat"]))
    members = (await world.http.get("/v1/segments/pro-repeat/members", headers=h)).json()
    assert [m["profile_id"] for m in members["items"]] == [p["id"]]
    assert (await world.http.get("/v1/segments/pro-repeat/count", headers=h)).json()["count"] == 1
    await world.send(ws, {"type": "identify", "user_id": "s1", "traits": {"plan": "free"}})
    await eventually(lambda: _with(world, h, "s1", lambda p: p["segments"] == []))
    changes = await world.changes(ws, lambda cs: any(c["kind"] == "segment_exited" for c in cs))
    kinds = [c["kind"] for c in changes if c["kind"].startswith("segment_")]
    assert kinds == ["segment_entered", "segment_exited"]
    events = await world.profile_events(ws, lambda es: len(es) >= 4)
    assert any(e["profile"]["segments"] == ["pro-repeat"] for e in events)
    # A segment defined later picks up existing profiles at once.
    r = await world.http.put("/v1/segments/free", headers=h, json={
        "name": "Free", "rule": {"field": "profile.traits.plan", "op": "eq", "value": "free"}})
    assert r.json()["count"] == 1


async def test_a_segment_too_large_for_the_request_is_finished_by_the_schedule(
        world: ProfileWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    ws, h = await world.workspace()
    await world.send(ws, *orders("big1", 2, 1, 10), *orders("big2", 2, 1, 10))
    await _metrics(world, h, "big2", 1)
    await _metrics(world, h, "big1", 1)
    monkeypatch.setattr(segments_api, "SYNC_PAGES", 0)  # as if the workspace were huge
    r = await world.http.put("/v1/segments/buyers", headers=h, json={
        "name": "Buyers", "rule": {"field": "profile.metrics.order_count", "op": "gte",
                                   "value": 1}})
    assert r.status_code == 200 and r.json()["computed"] is False and r.json()["count"] == 0
    r = await world.http.post("/v1/profile-settings/recompute", headers=h)
    assert r.status_code == 200, r.text
    got = (await world.http.get("/v1/segments/buyers", headers=h)).json()
    assert got["computed"] is True and got["count"] == 2
