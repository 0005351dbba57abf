"""Guardrails, versions, the "why?" trace, numbers and the management API, against the
real broker and Postgres (the harness is the engine tests' one)."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from shared.contracts.profile import ChangeKind
from shared.settings import Settings
from tests.integration.test_journey_engine import Harness, fast_example, running_harness
from touchpoint.cli import app as cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def harness(settings: Settings) -> AsyncIterator[Harness]:
    async with running_harness(settings) as h:
        yield h

HELLO = {"key": "hello", "name": "Hello", "reentry": "always",
         "stages": [{"key": "s", "enter": {"event": "Hello"}, "steps": [
             {"id": "hi", "send": {"channel": "email", "template": "hi"}}]}]}


async def test_quiet_hours_defer_to_the_morning_in_the_customers_zone(
        harness: Harness) -> None:
    ws, admin = await harness.workspace()
    doc = copy.deepcopy(HELLO) | {"quiet_hours": {"start": "21:00", "end": "09:00"}}
    await harness.publish(admin, doc)
    real = datetime.now(UTC)
    # Move the clock to 23:59:58 UTC: 08:59:58 in Tokyo (quiet for two more seconds) and
    # 23:59:58 in Lisbon (quiet until 09:00 there).
    tokyo_morning = real.replace(hour=23, minute=59, second=58, microsecond=0)  # 08:59:58 JST
    if tokyo_morning < real:
        tokyo_morning += timedelta(days=1)
    harness.clock.offset = tokyo_morning - real
    try:
        await harness.event(ws, "tokyo", "Hello", snapshot={"timezone": "Asia/Tokyo"})
        await harness.event(ws, "lisbon", "Hello", snapshot={"timezone": "Europe/Lisbon"})
        [sent] = await harness.sends(ws, 1, timeout=15)
        assert sent["profile_id"] == "tokyo"
        assert datetime.fromisoformat(sent["requested_at"]) >= tokyo_morning + timedelta(
            seconds=2)
        r = await harness.http.get(f"{harness.url}/v1/profiles/lisbon/journeys/hello/trace",
                                   headers=admin)
        deferred = [t for t in r.json()["trace"] if t["outcome"] == "deferred"]
        assert deferred[0]["reason"] == "quiet_hours 21:00-09:00 in Europe/Lisbon"
        [row] = [i for i in r.json()["instances"]]
        assert row["step"] == "hi" and row["waiting_until"] is not None
        assert len(harness.raw_sends(ws)) == 1
    finally:
        harness.clock.offset = timedelta(0)


async def test_frequency_caps_count_sends_across_journeys(harness: Harness) -> None:
    ws, admin = await harness.workspace()
    await harness.publish(admin, HELLO)
    capped = copy.deepcopy(HELLO) | {"key": "capped", "frequency_cap": {
        "email": {"max": 2, "per": "P1D"}}}
    capped["stages"][0]["enter"] = {"event": "Promo"}
    await harness.publish(admin, capped)
    await harness.event(ws, "fc", "Hello")
    await harness.event(ws, "fc", "Hello")
    await harness.sends(ws, 2)
    await harness.event(ws, "fc", "Promo")  # two emails today already, from another journey
    r = await harness.until(lambda: _trace(harness, admin, "fc", "capped", "deferred"))
    assert r[0]["reason"].startswith("frequency_cap email: 2 sent in the last P1D (max 2)")
    await asyncio.sleep(0.5)
    assert len(harness.raw_sends(ws)) == 2


async def _trace(harness: Harness, admin: dict[str, str], profile: str, key: str,
                 outcome: str) -> list[dict[str, Any]]:
    r = await harness.http.get(f"{harness.url}/v1/profiles/{profile}/journeys/{key}/trace",
                               headers=admin)
    return [t for t in r.json().get("trace", []) if t["outcome"] == outcome]


async def test_holdout_customers_are_counted_and_receive_nothing(harness: Harness) -> None:
    ws, admin = await harness.workspace()
    doc = copy.deepcopy(HELLO) | {"holdout_percent": 50, "goal": {"event": "Bought"},
                                  "reentry": "once"}
    await harness.publish(admin, doc)
    for n in range(20):
        await harness.event(ws, f"h{n}", "Hello")
    for n in range(0, 20, 2):
        await harness.event(ws, f"h{n}", "Bought")

    async def counted() -> dict[str, Any] | None:
        r = await harness.http.get(f"{harness.url}/v1/journeys/hello/stats", headers=admin)
        stats: dict[str, Any] = r.json()
        goal = stats["goal"]
        done = goal["treated"]["converted"] + goal["holdout"]["converted"] == 10
        return stats if stats["entries"] == 20 and done else None
    stats = await harness.until(counted)
    treated, holdout = stats["goal"]["treated"], stats["goal"]["holdout"]
    assert treated["customers"] + holdout["customers"] == 20 and holdout["customers"] > 0
    assert stats["sends"]["s"]["hi"].get("sent", 0) == treated["customers"]
    assert stats["sends"]["s"]["hi"]["held"] == holdout["customers"]
    goal = stats["goal"]
    assert goal["uplift"] == pytest.approx(treated["conversion"] - holdout["conversion"],
                                           abs=1e-6)
    low, high = goal["ci95"]
    assert low <= goal["uplift"] <= high
    sent = await harness.sends(ws, treated["customers"])
    assert len(sent) == treated["customers"]


async def test_customers_inside_finish_on_the_version_they_entered(harness: Harness) -> None:
    ws, admin = await harness.workspace()
    v1 = {"key": "pin", "name": "Pin", "stages": [{"key": "s", "enter": {"event": "Start"},
                                                   "steps": [
        {"id": "w", "wait": "PT2S"},
        {"id": "m", "send": {"channel": "email", "template": "v1-mail"}}]}]}
    assert await harness.publish(admin, v1) == 1
    await harness.event(ws, "old", "Start")
    await harness.until(lambda: _count_ws(harness, ws, 1))
    v2 = copy.deepcopy(v1)
    v2["stages"][0]["steps"][1]["send"]["template"] = "v2-mail"
    assert await harness.publish(admin, v2) == 2
    await harness.event(ws, "new", "Start")
    sent = await harness.sends(ws, 2)
    assert {(c["profile_id"], c["template"], c["journey"]["version"]) for c in sent} == {
        ("old", "v1-mail", 1), ("new", "v2-mail", 2)}
    r = await harness.http.get(f"{harness.url}/v1/journeys/pin", headers=admin)
    assert [v["version"] for v in r.json()["versions"]] == [1, 2] and r.json()["draft"] is None
    r = await harness.http.get(f"{harness.url}/v1/journeys/pin/versions/1", headers=admin)
    assert r.json()["document"]["stages"][0]["steps"][1]["send"]["template"] == "v1-mail"


async def test_stats_count_customers_and_instances_apart(harness: Harness) -> None:
    """With `instance_key` one customer runs the journey once per order: "customers" are
    distinct profiles, "instances" the runs, per stage, per step and in the goal."""
    ws, admin = await harness.workspace()
    await harness.publish(admin, {
        "key": "orders", "name": "Orders", "instance_key": "event.properties.order_id",
        "goal": {"event": "Reviewed"},
        "stages": [{"key": "bought", "enter": {"event": "Order Completed"},
                    "steps": [{"id": "nap", "wait": "P1D"}]}]})
    await harness.event(ws, "two-orders", "Order Completed", order_id="o-1")
    await harness.event(ws, "two-orders", "Order Completed", order_id="o-2")
    await harness.event(ws, "one-order", "Order Completed", order_id="o-3")
    await harness.event(ws, "two-orders", "Reviewed", order_id="o-1")  # that instance only

    async def counted() -> dict[str, Any] | None:
        r = await harness.http.get(f"{harness.url}/v1/journeys/orders/stats", headers=admin)
        stats: dict[str, Any] = r.json()
        done = stats["entries"] == 3 and stats["goal"]["treated"]["converted_instances"] == 1
        return stats if done else None  # two customers' events: two partitions, any order
    stats = await harness.until(counted)
    assert (stats["entries"], stats["customers"]) == (3, 2)
    assert stats["stages"] == {"bought": {"active": 3}}
    assert stats["stage_customers"] == {"bought": {"active": 2}}
    assert stats["active_by_step"] == {"bought": {"nap": 3}}
    assert stats["active_customers_by_step"] == {"bought": {"nap": 2}}
    assert stats["goal"]["treated"] == {"customers": 2, "converted": 1, "conversion": 0.5,
                                        "instances": 3, "converted_instances": 1,
                                        "revenue": 0.0, "revenue_per_customer": 0.0}
    assert stats["goal"]["holdout"]["customers"] == 0 and stats["goal"]["uplift"] is None
    spec = (await harness.http.get(f"{harness.url}/openapi.json")).json()
    described = spec["paths"]["/v1/journeys/{key}/stats"]["get"]["description"]
    assert "distinct profiles" in described and "stage_customers" in described


async def _count_ws(harness: Harness, ws: str, n: int) -> bool:
    return len(await harness.instances(ws)) >= n


async def test_trace_answers_why_not_and_stats_count_stages(harness: Harness) -> None:
    ws, admin = await harness.workspace()
    await harness.publish(admin, fast_example())
    await harness.event(ws, "t1", "Order Completed", order_id="small", total=20)
    await harness.event(ws, "t1", "Order Completed", order_id="big", total=70)
    await harness.sends(ws, 1)
    await harness.event(ws, "t1", "Review Submitted", order_id="big")
    await harness.sends(ws, 2)
    r = await harness.http.get(f"{harness.url}/v1/profiles/t1/journeys/post-purchase-review/"
                               "trace", headers=admin)
    assert r.status_code == 200
    trace = r.json()["trace"]
    miss = next(t for t in trace if t["outcome"] == "not_entered")
    assert miss["reason"] == "entry rule not met"
    assert miss["detail"]["seen"] == {"event.properties.total": 20}
    outcomes = [(t["kind"], t["outcome"], t["step"]) for t in trace
                if t["instance_key"] == "big"]
    assert ("send", "sent", "ask") in outcomes and ("wait_for", "matched", "listen") in outcomes
    assert ("goal", "reached", None) in outcomes
    r = await harness.http.get(f"{harness.url}/v1/profiles/t1/journeys", headers=admin)
    assert [(i["journey"], i["stage"], i["status"]) for i in r.json()["items"]] == [
        ("post-purchase-review", "reviewed", "completed")]
    stats = (await harness.http.get(f"{harness.url}/v1/journeys/post-purchase-review/stats",
                                    headers=admin)).json()
    assert stats["stages"] == {"reviewed": {"completed": 1}}
    assert stats["transitions"] == [{"from": "purchased", "to": "reviewed", "count": 1}]
    assert stats["time_in_stage"]["purchased"]["count"] == 1
    assert stats["sends"]["purchased"] == {"ask": {"sent": 1}, "thanks": {"sent": 1}}
    assert stats["goal"]["treated"] == {"customers": 1, "converted": 1, "conversion": 1.0,
                                        "instances": 1, "converted_instances": 1,
                                        "revenue": 0.0, "revenue_per_customer": 0.0}
    # The same trace through the CLI.
    key = admin["Authorization"].split()[1]
    args = ["journeys", "why", "t1", "post-purchase-review", "--url", harness.url,
            "--admin-key", key]
    table = await asyncio.to_thread(CliRunner().invoke, cli, args)
    assert table.exit_code == 0, table.output
    assert {"not_entered", "sent", "matched", "reached"} <= set(table.output.split())
    raw = await asyncio.to_thread(CliRunner().invoke, cli, [*args, "--json"])
    assert raw.exit_code == 0 and json.loads(raw.output)["trace"] == trace


async def test_segment_entry_update_profile_merge_and_erasure(harness: Harness) -> None:
    ws, admin = await harness.workspace()
    doc = {"key": "vip", "name": "VIP", "stages": [
        {"key": "vip", "enter": {"segment_entered": "vip"}, "steps": [
            {"id": "tag", "update_profile": {"vip_since": "now"}},
            {"id": "rest", "wait": "P1D"}]}],
        "exit_when": [{"segment_exited": "vip"}]}
    await harness.publish(admin, doc)
    await harness.change(ws, "m1", ChangeKind.segment_entered, segment="vip")
    await harness.change(ws, "m2", ChangeKind.segment_entered, segment="other")
    await harness.event(ws, "m1", "Noop")  # gives journey a snapshot with a user id
    await harness.until(lambda: _count_ws(harness, ws, 1))
    [row] = await harness.instances(ws)
    assert (row.profile_id, row.stage, row.step) == ("m1", "vip", "rest")
    await harness.change(ws, "m1", ChangeKind.merged, merged_ids=["m0"])  # m0 merged into m1
    await harness.change(ws, "m3", ChangeKind.merged, merged_ids=["m1"])  # m1 into m3
    await harness.until(lambda: _profile_is(harness, ws, "m3"))
    await harness.change(ws, "m3", ChangeKind.segment_exited, segment="vip")

    async def exited() -> bool:
        rows = await harness.instances(ws)
        return bool(rows) and rows[0].status == "exited"
    await harness.until(exited)
    await harness.change(ws, "m3", ChangeKind.erased)
    await harness.until(lambda: _gone(harness, ws))


async def _profile_is(harness: Harness, ws: str, profile: str) -> bool:
    rows = await harness.instances(ws)
    return bool(rows) and rows[0].profile_id == profile


async def _gone(harness: Harness, ws: str) -> bool:
    return await harness.instances(ws) == []


async def test_update_profile_publishes_an_identify_event(harness: Harness) -> None:
    ws, admin = await harness.workspace()
    doc = {"key": "tagger", "name": "Tagger", "stages": [
        {"key": "s", "enter": {"event": "Joined"}, "steps": [
            {"id": "tag", "update_profile": {"cohort": "2026-11"}}]}]}
    await harness.publish(admin, doc)
    await harness.event(ws, "up1", "Joined")
    found = await harness.until(lambda: [e for e in harness.identifies
                                         if e["workspace_id"] == ws])
    assert found[0]["type"] == "identify" and found[0]["traits"] == {"cohort": "2026-11"}
    assert found[0]["user_id"] == "u-up1" and found[0]["id"].startswith("journey-")


async def test_api_validation_lifecycle_and_simulation(harness: Harness) -> None:
    ws, admin = await harness.workspace()
    url = harness.url
    bad = fast_example()
    bad["stages"][0]["steps"][2]["wait_for"]["then"] = "nowhere"
    r = await harness.http.post(f"{url}/v1/journeys/validate", headers=admin, json=bad)
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    assert "stages.0.steps.2.wait_for.then: unknown step 'nowhere'" in r.json()["detail"]
    r = await harness.http.post(f"{url}/v1/journeys/validate", headers=admin,
                                json={"key": "x", "name": "X", "stages": [], "colour": 1})
    fields = {e["field"] for e in r.json()["errors"]}
    assert {"stages", "colour"} <= fields
    r = await harness.http.post(f"{url}/v1/journeys/validate", headers=admin, content=b"{nope")
    assert r.status_code == 400
    r = await harness.http.post(f"{url}/v1/journeys/validate", json=fast_example())
    assert r.status_code == 401
    r = await harness.http.post(f"{url}/v1/journeys/validate", headers=admin,
                                json=fast_example())
    assert r.json() == {"valid": True, "key": "post-purchase-review"}

    r = await harness.http.post(f"{url}/v1/journeys", headers=admin, json=fast_example())
    assert r.status_code == 201 and r.json()["status"] == "draft"
    start = "2026-11-20T10:00:00Z"
    r = await harness.http.post(f"{url}/v1/journeys/post-purchase-review/simulate",
                                headers=admin, json={
        "profile": {"profile_id": "sim", "email": "s@example.com", "phone": "+331"},
        "start": start, "events": [
            {"event": "Order Completed", "properties": {"order_id": "a", "total": 99}},
            {"event": "Review Submitted", "properties": {"order_id": "a"}, "after": "PT2S"}]})
    assert r.status_code == 200, r.text
    assert [s["template"] for s in r.json()["sends"]] == ["review-request", "review-thanks"]
    assert r.json()["ran"] == "draft"
    assert harness.raw_sends(ws) == []  # simulation sends nothing
    r = await harness.http.post(f"{url}/v1/journeys/post-purchase-review/simulate",
                                headers=admin, json={"profile": {}, "events": [{}]})
    assert r.status_code == 400

    for action, status in (("pause", 409), ("publish", 200), ("pause", 200), ("resume", 200)):
        r = await harness.http.post(f"{url}/v1/journeys/post-purchase-review/{action}",
                                    headers=admin)
        assert r.status_code == status, (action, r.text)
    await harness.event(ws, "a1", "Order Completed", order_id="z", total=99)
    await harness.until(lambda: _count_ws(harness, ws, 1))
    r = await harness.http.post(f"{url}/v1/journeys/post-purchase-review/archive",
                                headers=admin)
    assert r.json()["status"] == "archived"
    [row] = await harness.instances(ws)
    assert (row.status, row.exit_reason, row.wake_at) == ("exited", "journey archived", None)
    r = await harness.http.post(f"{url}/v1/journeys", headers=admin, json=fast_example())
    assert r.status_code == 409
    r = await harness.http.get(f"{url}/v1/journeys/nope/stats", headers=admin)
    assert r.status_code == 404


async def test_reentry_policies_on_the_real_pipeline(harness: Harness) -> None:
    ws, admin = await harness.workspace()
    for policy in ("once", "after_exit"):
        doc = {"key": f"re-{policy.replace('_', '-')}", "name": policy, "reentry": policy,
               "stages": [{"key": "s", "enter": {"event": f"Visit {policy}"}, "steps": [
                   {"id": "hi", "send": {"channel": "email", "template": policy}}]}]}
        await harness.publish(admin, doc)
    cooled = {"key": "re-cooldown", "name": "cooldown", "reentry": "always",
              "reentry_cooldown": "PT1H", "stages": [{"key": "s", "enter": {
                  "event": "Visit cooldown"}, "steps": [
                  {"id": "hi", "send": {"channel": "email", "template": "cooldown"}}]}]}
    await harness.publish(admin, cooled)
    for _ in range(3):
        for name in ("once", "after_exit", "cooldown"):
            await harness.event(ws, "re", f"Visit {name}")
    sent = await harness.sends(ws, 5)
    await asyncio.sleep(1)
    counts = {t: sum(1 for c in harness.raw_sends(ws) if c["template"] == t)
              for t in ("once", "after_exit", "cooldown")}
    assert counts == {"once": 1, "after_exit": 3, "cooldown": 1}, sent
    blocked = await _trace(harness, admin, "re", "re-once", "blocked")
    assert [b["reason"] for b in blocked] == [
        "reentry=once: the customer was already in this journey"] * 2
    blocked = await _trace(harness, admin, "re", "re-cooldown", "blocked")
    assert len(blocked) == 2 and blocked[0]["reason"].startswith("reentry_cooldown PT1H")
