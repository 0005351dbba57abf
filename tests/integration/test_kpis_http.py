"""/v1/kpis over HTTP, fed through the real consumer path (Kafka -> profile's consumer)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from profile_support import ProfileWorld, eventually, profile_world

from services.profile.settings import ProfileSettings
from shared.contracts.delivery import DeliveryEvent
from shared.kafka.codec import encode, headers_for
from shared.settings import Settings

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(settings: Settings, topics: list[str]) -> AsyncIterator[ProfileWorld]:
    # Journey is nowhere: port 9 (discard) refuses, so the uplift degrades.
    own = ProfileSettings(**{**settings.model_dump(), "journey_url": "http://127.0.0.1:9",
                             "kpis_uplift_timeout_s": 1.0})
    async for w in profile_world(own):
        yield w


async def test_time_zone_is_a_validated_convention(world: ProfileWorld) -> None:
    _, h = await world.workspace()
    got = (await world.http.get("/v1/profile-settings", headers=h)).json()
    assert got["conventions"]["timezone"] == "UTC"
    assert got["conventions"]["attribution_click_window"] == "P5D"
    r = await world.http.put("/v1/profile-settings/conventions", headers=h,
                             json={"timezone": "Europe/Berlin"})
    assert r.status_code == 200, r.text
    got = (await world.http.get("/v1/profile-settings", headers=h)).json()
    assert got["conventions"]["timezone"] == "Europe/Berlin"
    r = await world.http.put("/v1/profile-settings/conventions", headers=h,
                             json={"timezone": "Mars/Olympus"})
    assert r.status_code == 400 and r.headers["content-type"].startswith(
        "application/problem+json")
    assert r.json()["errors"][0]["field"] == "timezone"


@pytest.mark.parametrize(("params", "field"), [
    ({"interval": "year"}, "interval"),
    ({"colour": "red"}, "colour"),
    ({"from": "2026-11-10", "to": "2026-11-01"}, "from"),
    ({"from": "2020-01-01", "to": "2026-11-01"}, "from"),
    ({"journey": "a", "template": "b"}, "template"),
    ({"channel": "fax"}, "channel"),
    ({"segment": "nope"}, "segment"),
    ({"from": "yesterday"}, "query.from"),
    ({"journey": "x" * 300}, "query.journey"),
])
async def test_bad_input_is_a_400_naming_the_field(world: ProfileWorld, params: dict[str, str],
                                                   field: str) -> None:
    _, h = await world.workspace()
    r = await world.http.get("/v1/kpis", headers=h, params=params)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["errors"][0]["field"] == field


async def test_kpis_need_the_admin_key(world: ProfileWorld) -> None:
    assert (await world.http.get("/v1/kpis")).status_code == 401


async def test_consumer_path_counts_once_and_uplift_degrades(world: ProfileWorld) -> None:
    ws, h = await world.workspace()
    await world.send(ws, {"type": "identify", "user_id": "u1", "traits": {"email": "u@x.io"}})
    p = await eventually(lambda: world.lookup(h, user_id="u1"))
    now = datetime.now(UTC)
    sent = DeliveryEvent.model_validate({
        "id": f"d-{uuid.uuid4().hex}", "workspace_id": ws, "profile_id": p["id"],
        "message_id": "m1", "status": "sent", "channel": "email", "occurred_at": now,
        "journey": {"key": "welcome", "version": 1}, "template": "w"})
    for _ in range(2):  # delivered twice (a redelivery): the inbox keeps it to one
        await world.producer.send_and_wait(
            world.settings.topic("delivery-events"), encode(sent),
            key=f"{ws}:{p['id']}".encode(), headers=headers_for(sent, "delivery-events"))
    await world.deliver(ws, {"profile_id": p["id"], "message_id": "m1", "status": "clicked",
                             "journey": {"key": "welcome", "version": 1}, "template": "w"})
    later = (now + timedelta(minutes=5)).isoformat()
    for _ in range(2):  # the shop retries: same order id
        await world.send(ws, {"type": "track", "event": "Order Completed", "user_id": "u1",
                              "timestamp": later,
                              "properties": {"order_id": "o-1", "revenue": 42}})

    async def settled() -> dict[str, Any] | None:
        r = await world.http.get("/v1/kpis", headers=h)
        body: dict[str, Any] = r.json()
        return body if r.status_code == 200 and \
            body["totals"]["attribution"]["orders"] == 1 else None
    got = await eventually(settled)
    t = got["totals"]
    assert (t["communication"]["sent"], t["communication"]["unique_clicks"],
            t["communication"]["unique_opens"]) == (1, 1, 1)
    assert (t["sales"]["orders"], t["sales"]["revenue"]) == (1, 42.0)
    assert t["attribution"]["revenue"] == 42.0
    # Journey unavailable: no journey's uplift, a warning; the CRM uplift is profile's own.
    assert set(t["uplift"]) == {"crm"}
    assert got["warnings"][0].startswith("uplift: journey unavailable")
    crm = t["uplift"]["crm"]
    assert (crm["treated"]["customers"], crm["treated"]["converted"],
            crm["treated"]["revenue"], crm["control_size"]) == (1, 1, 42.0, 0)
    assert len(got["series"]) == 30 and got["window"]["interval"] == "day"
    assert got["by"]["journey"]["welcome"]["attribution"]["orders"] == 1

    r = await world.http.post("/v1/kpis/rebuild", headers=h)
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]

    async def finished() -> dict[str, Any] | None:
        body: dict[str, Any] = (await world.http.get(f"/v1/kpis/rebuild/{run_id}",
                                                     headers=h)).json()
        return body if body["status"] != "running" else None
    run = await eventually(finished)
    assert run["status"] == "done" and run["events_done"] == run["events_total"] > 0
    again = (await world.http.get("/v1/kpis", headers=h)).json()["totals"]
    assert (again["communication"], again["sales"], again["attribution"]) == \
        (t["communication"], t["sales"], t["attribution"])
    assert (await world.http.get("/v1/kpis/rebuild/nope", headers=h)).status_code == 404


async def test_a_reporting_segment_can_filter_the_kpis(world: ProfileWorld) -> None:
    _, h = await world.workspace()
    rule = {"field": "profile.traits.plan", "op": "eq", "value": "pro"}
    r = await world.http.put("/v1/segments/pro", headers=h,
                             json={"name": "Pro", "rule": rule, "reporting": True})
    assert r.status_code == 200 and r.json()["reporting"] is True, r.text
    await world.http.put("/v1/segments/plain", headers=h, json={"name": "Plain", "rule": rule})
    got = await world.http.get("/v1/kpis", headers=h, params={
        "segment": "pro", "from": "2026-11-01", "to": "2026-11-30", "interval": "week"})
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["window"]["filters"] == {"segment": "pro"}
    assert [s["start"] for s in body["series"]][:2] == ["2026-10-26", "2026-11-02"]
    assert body["totals"]["sales"]["orders"] == 0
    r = await world.http.get("/v1/kpis", headers=h, params={"segment": "plain"})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "segment"
