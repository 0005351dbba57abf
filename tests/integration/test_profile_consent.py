"""Delivery outcomes and the consent API against the real broker and Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from profile_support import ProfileWorld, eventually, profile_world

from shared.settings import Settings

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(settings: Settings, topics: list[str]) -> AsyncIterator[ProfileWorld]:
    async for w in profile_world(settings):
        yield w


async def _profile(world: ProfileWorld, h: dict[str, str], check: Any) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        p = await world.lookup(h, user_id="ann")
        return p if p and check(p) else None
    return await eventually(probe)


async def test_delivery_outcomes_become_engagement_consent_and_reachability(
        world: ProfileWorld) -> None:
    ws, h = await world.workspace()
    await world.send(ws, {"type": "identify", "user_id": "ann",
                          "traits": {"email": "ann@example.com"},
                          "context": {"device": {"token": "push-token-123456"}}})
    p = await _profile(world, h, lambda p: p["event_count"] == 1)
    assert p["reachable"] == {"email": True, "sms": False, "push": True}
    pid = p["id"]
    await world.deliver(ws, {"profile_id": pid, "status": "opened", "template": "welcome"},
                        {"profile_id": pid, "status": "clicked", "url": "https://x.io"},
                        {"profile_id": pid, "status": "unsubscribed"},
                        {"profile_id": pid, "status": "bounced", "reason": "550 5.1.1 unknown"},
                        {"profile_id": pid, "status": "failed", "channel": "push",
                         "reason": "invalid push token"})
    p = await _profile(world, h, lambda p: p["event_count"] == 6)
    assert p["metrics"]["last_open_at"] and p["metrics"]["last_click_at"]
    assert p["metrics"]["unsubscribed_channels"] == ["email"]
    assert p["consent"]["email"]["subscribed"] is False
    assert p["reachable"] == {"email": False, "sms": False, "push": False}
    events = await world.profile_events(ws, lambda es: len(es) >= 6)
    names = [e["event"].get("event") for e in events]
    assert {"Email Opened", "Email Link Clicked", "Unsubscribed", "Email Bounced",
            "Push Notification Failed"} <= set(names)
    unsubscribed = next(e for e in events if e["event"].get("event") == "Unsubscribed")
    assert unsubscribed["profile"]["consent"] == {"email": False}
    changes = await world.changes(ws, lambda cs: sum(c["kind"] == "address_changed"
                                                     and not c["data"]["deliverable"]
                                                     for c in cs) >= 2)
    consent = [c for c in changes if c["kind"] == "consent_changed"]
    assert consent[0]["data"]["channel"] == "email" and consent[0]["data"]["subscribed"] is False


async def test_consent_api_per_channel_and_topic(world: ProfileWorld) -> None:
    ws, h = await world.workspace()
    await world.send(ws, {"type": "identify", "user_id": "ann",
                          "traits": {"phone": "+16502530000"}})
    pid = (await _profile(world, h, lambda p: True))["id"]
    r = await world.http.put(f"/v1/profiles/{pid}/consent", headers=h,
                             json={"topic": "newsletter", "subscribed": True, "source": "form"})
    assert r.status_code == 200, r.text
    r = await world.http.put(f"/v1/profiles/{pid}/consent", headers=h,
                             json={"channel": "sms", "subscribed": False})
    assert r.json()["consent"]["sms"]["subscribed"] is False
    bad = await world.http.put(f"/v1/profiles/{pid}/consent", headers=h,
                               json={"channel": "fax", "subscribed": False})
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "channel"
    both = await world.http.put(f"/v1/profiles/{pid}/consent", headers=h,
                                json={"subscribed": True})
    assert both.status_code == 400
    assert (await world.http.put("/v1/profiles/nope/consent", headers=h,
                                 json={"channel": "sms", "subscribed": True})).status_code == 404
    got = (await world.http.get(f"/v1/profiles/{pid}/consent", headers=h)).json()
    assert got["consent"]["topic:newsletter"]["source"] == "form"
    changes = await world.changes(ws, lambda cs: sum(c["kind"] == "consent_changed"
                                                     for c in cs) >= 2)
    data = [c["data"] for c in changes if c["kind"] == "consent_changed"]
    assert {"topic": "newsletter", "subscribed": True, "source": "form"} in data
    assert (await world.http.get(f"/v1/profiles/{pid}")).status_code == 401


async def test_conventions_search_and_client_errors(world: ProfileWorld) -> None:
    ws, h = await world.workspace()
    bad = await world.http.put("/v1/profile-settings/conventions", headers=h,
                               json={"at_risk_after": 5, "lapsed_after": 2})
    assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"
    r = await world.http.put("/v1/profile-settings/conventions", headers=h,
                             json={"order_events": ["Purchase"], "revenue_properties": ["amount"],
                                   "phone_region": "GB"})
    assert r.status_code == 200, r.text
    await world.send(ws, {"type": "track", "event": "Purchase", "user_id": "ann",
                          "properties": {"amount": "12.50"}},
                     {"type": "identify", "user_id": "ann",
                      "traits": {"phone": "020 7946 0958", "name": "Ann Lee"}})
    p = await _profile(world, h, lambda p: p["event_count"] == 2)
    assert p["metrics"]["revenue"] == 12.5 and p["phone"] == "+442079460958"
    found = (await world.http.get("/v1/profiles", headers=h, params={"q": "lee"})).json()
    assert [x["id"] for x in found["items"]] == [p["id"]]
    assert (await world.http.get("/v1/profiles", headers=h,
                                 params={"q": "lee", "offset": 1})).json()["items"] == []
    r = await world.http.get("/v1/profiles/lookup", headers=h, params={"phone": "12"})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "query.phone"
    r = await world.http.get("/v1/profiles/lookup", headers=h)
    assert r.status_code == 400
    for path in ("/v1/profiles/unknown", "/v1/profiles/unknown/events", "/v1/segments/none"):
        r = await world.http.get(path, headers=h)
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    r = await world.http.get(f"/v1/profiles/{p['id']}/events", headers=h,
                             params={"limit": 501})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "query.limit"


async def test_sent_codes_are_kept_as_profile_codes(world: ProfileWorld) -> None:
    ws, h = await world.workspace()
    await world.send(ws, {"type": "identify", "user_id": "ann",
                          "traits": {"email": "ann@example.com"}})
    pid = (await _profile(world, h, lambda p: True))["id"]
    await world.deliver(ws, {"profile_id": pid, "status": "sent", "template": "thanks",
                             "template_version": 2, "codes": {"thanks-20": "TH-7K2M"}},
                        {"profile_id": pid, "status": "sent", "test": True,
                         "codes": {"thanks-20": "TEST-ONLY"}})
    p = await _profile(world, h, lambda p: p["event_count"] == 3)
    assert p["codes"] == {"thanks-20": "TH-7K2M"}
    events = await world.profile_events(ws, lambda es: len(es) >= 3)
    assert events[-1]["profile"]["codes"] == {"thanks-20": "TH-7K2M"}
