"""Campaigns against the real broker and Postgres: the contact policy across journeys and
broadcasts, broadcasts (preview, send, cancel, resume), the global control group and the
outcomes on `delivery-events`. Messaging and profile run in-process (their real apps) for
the template and segment lookups."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from typer.testing import CliRunner

from services.journey.app import create_app as journey_app
from services.journey.domain.uplift import welch
from services.journey.policy.directory import Directory, revenue_names, zones
from services.journey.settings import JourneySettings
from services.journey.tables import api_keys, instances, snapshots
from services.messaging import tables as messaging_tables
from services.messaging.app import create_app as messaging_app
from services.profile import tables as profile_tables
from services.profile.app import create_app as profile_app
from shared.auth import hash_key, new_key
from shared.kafka.admin import ensure_topics
from shared.settings import Settings
from tests.integration.test_journey_engine import Harness, running_harness
from tests.support.servers import serve_app
from touchpoint.cli import app as cli

pytestmark = pytest.mark.integration


@dataclass
class Stack:
    journey: Harness
    messaging: str
    profile: str
    outcomes: list[dict[str, Any]]
    # A workspace whose admin key journey holds (TOUCHPOINT_SERVICE_KEYS): the engine reads
    # its conventions from profile with that key.
    served: tuple[str, str]


async def _ready(http: httpx.AsyncClient, url: str) -> None:
    for _ in range(300):
        if (await http.get(f"{url}/readyz")).status_code == 200:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(url)


async def _read_outcomes(settings: Settings, into: list[dict[str, Any]]) -> None:
    consumer = AIOKafkaConsumer(settings.topic("delivery-events"),
                                bootstrap_servers=settings.kafka_bootstrap,
                                group_id=f"reader-{uuid.uuid4()}", auto_offset_reset="earliest",
                                fetch_max_wait_ms=20)
    await consumer.start()
    try:
        while True:
            for batch in (await consumer.getmany(timeout_ms=100)).values():
                into.extend(orjson.loads(r.value) for r in batch)
    finally:
        await consumer.stop()


@pytest.fixture(scope="module")
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    # Messaging and profile on topics of their own: only their HTTP APIs are used here.
    others = settings.model_copy(update={"topic_prefix": f"cx-{uuid.uuid4().hex[:8]}."})
    await ensure_topics(others)
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=10))
        messaging = await stack.enter_async_context(serve_app(messaging_app(others)))
        profile = await stack.enter_async_context(serve_app(profile_app(others)))
        await _ready(http, messaging)
        await _ready(http, profile)
        served = (f"ws-{uuid.uuid4().hex[:10]}", new_key("admin"))
        own = JourneySettings(**settings.model_dump(), messaging_url=messaging,
                              profile_url=profile, directory_ttl_s=0,
                              service_keys=dict([served]))
        harness = await stack.enter_async_context(running_harness(own))
        outcomes: list[dict[str, Any]] = []
        reader = asyncio.create_task(_read_outcomes(harness.settings, outcomes))
        try:
            yield Stack(harness, messaging, profile, outcomes, served)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


async def workspace(s: Stack, named: tuple[str, str] | None = None
                    ) -> tuple[str, dict[str, str]]:
    """A fresh workspace (or this one) whose admin key every service knows, with an email
    template `news` (marketing, topic news), a transactional `receipt` and a segment
    `vip`."""
    ws, key = named or (f"ws-{uuid.uuid4().hex[:10]}", new_key("admin"))
    for table in (messaging_tables.api_keys, profile_tables.api_keys):
        async with s.journey.engine.begin() as conn:
            await conn.execute(insert(table).values(key_hash=hash_key(key), kind="admin",
                                                    workspace_id=ws, name="test"))
    async with s.journey.engine.begin() as conn:
        await conn.execute(insert(api_keys).values(key_hash=hash_key(key), kind="admin",
                                                   workspace_id=ws, name="test"))
    admin = {"Authorization": f"Bearer {key}"}
    http = s.journey.http
    for name, category in (("news", "marketing"), ("receipt", "transactional"),
                           ("promo", "marketing")):
        r = await http.put(f"{s.messaging}/v1/templates/{name}", headers=admin, json={
            "channel": "email", "subject": "Hi", "text": "Hello", "category": category,
            "topic": "news" if name == "news" else None})
        assert r.status_code == 200, r.text
    r = await http.put(f"{s.profile}/v1/segments/vip", headers=admin, json={
        "name": "VIP", "rule": {"field": "profile.traits.vip", "op": "eq", "value": True}})
    assert r.status_code == 200, r.text
    return ws, admin


async def put_policy(s: Stack, admin: dict[str, str], policy: dict[str, Any]) -> None:
    r = await s.journey.http.put(f"{s.journey.url}/v1/policy", headers=admin, json=policy)
    assert r.status_code == 200, r.text


async def customers(s: Stack, ws: str, ids: list[str], **snapshot: Any) -> None:
    """Journey sees these customers (an event each), members of segment `vip`."""
    for pid in ids:
        await s.journey.event(ws, pid, "Seen", snapshot={"segments": ["vip"]} | snapshot)
    await s.journey.until(lambda: _snapshots(s, ws, ids), timeout=30)


async def _snapshots(s: Stack, ws: str, ids: list[str]) -> bool:
    async with s.journey.engine.connect() as conn:
        n = (await conn.execute(select(func.count()).select_from(snapshots).where(
            snapshots.c.workspace_id == ws, snapshots.c.profile_id.in_(ids)))).scalar_one()
    return bool(n == len(ids))


async def broadcast(s: Stack, admin: dict[str, str], key: str, body: dict[str, Any]
                    ) -> httpx.Response:
    return await s.journey.http.put(f"{s.journey.url}/v1/broadcasts/{key}", headers=admin,
                                    json=body)


async def finished(s: Stack, admin: dict[str, str], key: str,
                   statuses: tuple[str, ...] = ("sent",)) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        r = await s.journey.http.get(f"{s.journey.url}/v1/broadcasts/{key}", headers=admin)
        body: dict[str, Any] = r.json()
        return body if body["status"] in statuses else None
    result: dict[str, Any] = await s.journey.until(check, timeout=40)
    return result


async def test_policy_is_validated_and_kept(stack: Stack) -> None:
    ws, admin = await workspace(stack)
    url = f"{stack.journey.url}/v1/policy"
    r = await stack.journey.http.get(url, headers=admin)
    assert r.status_code == 200 and r.json()["policy"]["caps"] == []
    doc = {"caps": [{"channel": "email", "topic": "news", "max": 2, "per": "P1D"},
                    {"channel": "email", "max": 3, "per": "calendar_day"}],
           "quiet_hours": {"start": "21:00", "end": "09:00"}, "priority": ["cart", "welcome"],
           "on_hold": {"defer": True, "expire_after": "P2D"}, "max_per_second": 200,
           "control_group_percent": 5}
    await put_policy(stack, admin, doc)
    r = await stack.journey.http.get(url, headers=admin)
    assert r.json()["policy"]["caps"][1]["per"] == "calendar_day"
    assert r.json()["policy"]["on_hold"]["expire_after"] == "P2D"
    bad = [({"caps": [doc["caps"][0], doc["caps"][0]]}, "caps.1"),
           ({"caps": [{"channel": "email", "max": 5, "per": "P1D"},
                      {"channel": "email", "max": 3, "per": "P7D"}]}, "caps.0"),
           ({"on_hold": {"defer": False, "expire_after": "P1D"}}, "on_hold.expire_after"),
           ({"quiet_hours": {"start": "09:00", "end": "09:00"}}, "quiet_hours"),
           ({"priority": ["a", "a"]}, "priority"),
           ({"caps": [{"channel": "email", "max": 0, "per": "P1D"}]}, "caps.0.max")]
    for body, field in bad:
        r = await stack.journey.http.put(url, headers=admin, json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["errors"][0]["field"] == field, r.json()


async def test_broadcast_bad_input_is_a_400_naming_the_field(stack: Stack) -> None:
    ws, admin = await workspace(stack)
    ok = {"segment": "vip", "template": "news"}
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    cases = [({"segment": "vip", "template": "nope"}, "template"),
             ({"segment": "nope", "template": "news"}, "segment"),
             ({"template": "news"}, "segment"),
             (ok | {"condition": {"field": "profile.traits.vip", "op": "eq", "value": True}},
              "segment"),
             (ok | {"throttle_per_second": 0}, "throttle_per_second"),
             (ok | {"send_at": past}, "send_at"),
             (ok | {"channel": "sms"}, "channel")]
    for body, field in cases:
        r = await broadcast(stack, admin, "bad", body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["errors"][0]["field"] == field, (body, r.json())
    r = await stack.journey.http.get(f"{stack.journey.url}/v1/broadcasts/bad", headers=admin)
    assert r.status_code == 404


async def test_preview_equals_what_is_sent_and_the_control_group_gets_nothing(
        stack: Stack) -> None:
    ws, admin = await workspace(stack)
    await put_policy(stack, admin, {"control_group_percent": 40})
    ids = [f"p{n:02d}" for n in range(40)]
    await customers(stack, ws, ids[:36])
    await customers(stack, ws, ids[36:38], email=None)  # no address
    await customers(stack, ws, ids[38:], consent={"topic:news": False})
    assert (await broadcast(stack, admin, "sale", {"segment": "vip", "template": "news",
                                                   "name": "Sale"})).status_code == 200
    r = await stack.journey.http.post(f"{stack.journey.url}/v1/broadcasts/sale/preview",
                                      headers=admin)
    assert r.status_code == 200, r.text
    preview = r.json()
    assert preview["recipients"] + sum(preview["suppressed"].values()) == 40
    assert preview["suppressed"].get("control_group", 0) > 0
    assert preview["suppressed"].get("undeliverable", 0) + preview["suppressed"].get(
        "control_group", 0) + preview["suppressed"].get("no_consent", 0) == sum(
        preview["suppressed"].values())
    assert len(preview["sample"]) == min(10, preview["recipients"])
    r = await stack.journey.http.post(f"{stack.journey.url}/v1/broadcasts/sale/send",
                                      headers=admin)
    assert r.status_code == 200 and r.json()["status"] in ("sending", "sent"), r.text
    done = await finished(stack, admin, "sale")
    counts = done["counts"]
    assert counts["sent"] == preview["recipients"]
    assert counts["suppressed"] == sum(preview["suppressed"].values())
    assert counts["reasons"] == preview["suppressed"]
    sent = await stack.journey.sends(ws, preview["recipients"])
    assert all(c["broadcast"] == "sale" and "journey" not in c for c in sent)
    assert all(c["idempotency_key"] == f"broadcast:sale:{c['profile_id']}" for c in sent)
    control = await stack.journey.until(lambda: [
        e for e in stack.outcomes if e["workspace_id"] == ws and e.get("rule") ==
        "control_group"] if len([e for e in stack.outcomes if e["workspace_id"] == ws
                                 and e.get("rule") == "control_group"])
        == preview["suppressed"]["control_group"] else None)
    assert all(e["status"] == "suppressed" and e["broadcast"] == "sale" for e in control)
    assert not {e["profile_id"] for e in control} & {c["profile_id"] for c in sent}
    r = await stack.journey.http.post(f"{stack.journey.url}/v1/broadcasts/sale/send",
                                      headers=admin)
    assert r.status_code == 409
    assert (await broadcast(stack, admin, "sale", {"segment": "vip", "template": "news"})
            ).status_code == 409
    await asyncio.sleep(0.3)
    assert len(stack.journey.raw_sends(ws)) == preview["recipients"]


async def test_cancel_mid_send_then_resume_sends_nobody_twice(stack: Stack) -> None:
    ws, admin = await workspace(stack)
    ids = [f"c{n:02d}" for n in range(30)]
    await customers(stack, ws, ids)
    assert (await broadcast(stack, admin, "slow", {"segment": "vip", "template": "news",
                                                   "throttle_per_second": 10})
            ).status_code == 200
    url = f"{stack.journey.url}/v1/broadcasts/slow"
    assert (await stack.journey.http.post(f"{url}/send", headers=admin)).status_code == 200
    await stack.journey.sends(ws, 5)
    r = await stack.journey.http.post(f"{url}/cancel", headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    await asyncio.sleep(1.0)
    stopped = len({c["idempotency_key"] for c in stack.journey.raw_sends(ws)})
    assert 5 <= stopped < 30
    r = await stack.journey.http.get(url, headers=admin)
    assert r.json()["counts"]["sent"] == stopped
    await asyncio.sleep(0.5)
    assert len({c["idempotency_key"] for c in stack.journey.raw_sends(ws)}) == stopped
    r = await stack.journey.http.post(f"{url}/send", headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "sending"
    done = await finished(stack, admin, "slow")
    assert done["counts"]["sent"] == 30
    sent = await stack.journey.sends(ws, 30)
    assert sorted(c["profile_id"] for c in sent) == ids
    await asyncio.sleep(0.3)
    assert len(stack.journey.raw_sends(ws)) == 30  # no command was produced twice


HELLO = {"key": "j1", "name": "J", "reentry": "always",
         "stages": [{"key": "s", "enter": {"event": "Go1"}, "steps": [
             {"id": "hi", "send": {"channel": "email", "template": "promo"}}]}]}


def _journey(n: int) -> dict[str, Any]:
    doc = copy.deepcopy(HELLO) | {"key": f"j{n}"}
    doc["stages"][0]["enter"] = {"event": f"Go{n}"}
    return doc


async def test_a_cap_of_two_a_day_across_three_journeys_and_a_broadcast(stack: Stack) -> None:
    ws, admin = await workspace(stack)
    paris = ZoneInfo("Europe/Paris")
    real = datetime.now(UTC)
    evening = datetime.now(paris).replace(hour=20, minute=0, second=0, microsecond=0)
    if evening.astimezone(UTC) < real:
        evening += timedelta(days=1)
    harness = stack.journey
    harness.clock.offset = evening.astimezone(UTC) - real
    try:
        await put_policy(stack, admin, {
            "caps": [{"channel": "email", "max": 2, "per": "calendar_day"}],
            "on_hold": {"defer": True, "expire_after": "PT6H"}})
        for n in (1, 2, 3, 4):
            await harness.publish(admin, _journey(n))
        await customers(stack, ws, ["ana"], timezone="Europe/Paris")
        for n in (1, 2, 3):
            await harness.event(ws, "ana", f"Go{n}", snapshot={"segments": ["vip"],
                                                                "timezone": "Europe/Paris"})
        await harness.sends(ws, 2)
        assert (await broadcast(stack, admin, "b", {"segment": "vip", "template": "news"})
                ).status_code == 200
        r = await harness.http.post(f"{harness.url}/v1/broadcasts/b/preview", headers=admin)
        assert r.json()["suppressed"] == {"cap": 1}
        await harness.http.post(f"{harness.url}/v1/broadcasts/b/send", headers=admin)

        def deferred() -> list[dict[str, Any]]:
            return [e for e in stack.outcomes if e["workspace_id"] == ws
                    and e["status"] == "deferred"]
        held = await harness.until(lambda: deferred() if len(deferred()) == 2 else None)
        midnight = (evening + timedelta(days=1)).replace(hour=0).astimezone(UTC)
        assert {e["rule"] for e in held} == {"caps.0"}
        assert {e["window"] for e in held} == {"calendar_day"} and {e["count"] for e in held
                                                                    } == {2}
        assert {datetime.fromisoformat(e["until"]) for e in held} == {midnight}
        assert {bool(e.get("broadcast")) for e in held} == {True, False}
        await asyncio.sleep(0.5)
        assert len(harness.raw_sends(ws)) == 2
        # The next local day: the two held sends go out (a new day's two).
        harness.clock.offset = midnight + timedelta(minutes=1) - real
        sent = await harness.sends(ws, 4)
        late = [c for c in sent if datetime.fromisoformat(c["requested_at"]) >= midnight]
        assert len(late) == 2 and all(c.get("expires_at") for c in late)
        # A third that day is held, and dropped as expired six hours later.
        await harness.event(ws, "ana", "Go4", snapshot={"segments": ["vip"],
                                                        "timezone": "Europe/Paris"})
        await harness.until(lambda: len(deferred()) == 3)
        harness.clock.offset = midnight + timedelta(hours=7) - real

        def expired() -> list[dict[str, Any]]:
            return [e for e in stack.outcomes if e["workspace_id"] == ws
                    and e["status"] == "expired"]
        [gone] = await harness.until(expired)
        assert gone["rule"] == "on_hold.expire_after" and gone["journey"]["key"] == "j4"
        r = await harness.http.get(f"{harness.url}/v1/profiles/ana/journeys/j4/trace",
                                   headers=admin)
        assert [t["outcome"] for t in r.json()["trace"] if t["kind"] == "send"] == [
            "deferred", "expired"]
        await asyncio.sleep(0.5)
        assert len(harness.raw_sends(ws)) == 4
    finally:
        harness.clock.offset = timedelta(0)


async def test_two_replicas_firing_at_once_never_exceed_a_cap(stack: Stack) -> None:
    ws, admin = await workspace(stack)
    harness = stack.journey
    await put_policy(stack, admin, {"caps": [{"channel": "email", "max": 1, "per": "P1D"}]})
    doc = {"key": "race", "name": "Race", "instance_key": "event.properties.n",
           "stages": [{"key": "s", "enter": {"event": "Race"}, "steps": [
               {"id": "w", "wait": "PT2S"},
               {"id": "m", "send": {"channel": "email", "template": "promo"}}]}]}
    await harness.publish(admin, doc)
    async with serve_app(journey_app(harness.settings, harness.clock)) as second:
        await _ready(harness.http, second)
        for n in range(12):
            await harness.event(ws, "racer", "Race", n=n)
        # Generous waits: on a loaded machine (after tests/reliability) the two replicas
        # take long to get there; what is asserted does not depend on how long.
        await harness.sends(ws, 1, timeout=90)

        def outcomes() -> list[dict[str, Any]]:
            return [e for e in stack.outcomes if e["workspace_id"] == ws]
        await harness.until(lambda: len(outcomes()) >= 11, timeout=90)
        await asyncio.sleep(1.0)
    assert len({c["idempotency_key"] for c in harness.raw_sends(ws)}) == 1
    # Eleven held (delivery is at least once: a message may come twice, under its id).
    assert len({e["message_id"] for e in outcomes()}) == 11
    assert {e["status"] for e in outcomes()} == {"deferred"}


async def test_simulate_applies_the_workspace_policy(stack: Stack) -> None:
    """A simulation sees what the engine would: the policy's cap (counting the simulated
    sends), the template's category from messaging, control group membership as journey
    keeps it."""
    ws, admin = await workspace(stack)
    await put_policy(stack, admin, {"caps": [{"channel": "email", "max": 1, "per": "P1D"}]})
    doc = _journey(1) | {"key": "sim"}
    doc["stages"][0]["steps"] = [
        {"id": "a", "send": {"channel": "email", "template": "promo"}},
        {"id": "b", "send": {"channel": "email", "template": "promo"}},
        {"id": "r", "send": {"channel": "email", "template": "receipt"}}]
    r = await stack.journey.http.post(f"{stack.journey.url}/v1/journeys", headers=admin,
                                      json=doc)
    assert r.status_code == 201, r.text
    start = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)

    async def simulate(pid: str) -> dict[str, Any]:
        r = await stack.journey.http.post(
            f"{stack.journey.url}/v1/journeys/sim/simulate", headers=admin, json={
                "profile": {"profile_id": pid, "email": f"{pid}@x.test"},
                "events": [{"event": "Go1"}], "start": start.isoformat(), "horizon": "P3D"})
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body
    body = await simulate("sim-a")
    assert [(s["step"], datetime.fromisoformat(s["at"])) for s in body["sends"]] == [
        ("a", start), ("b", start + timedelta(days=1)), ("r", start + timedelta(days=1))]
    [held] = [t for t in body["trace"] if t["outcome"] == "deferred"]
    assert held["detail"]["rule"] == "caps.0"
    await customers(stack, ws, ["sim-c"])
    async with stack.journey.engine.begin() as conn:
        await conn.execute(snapshots.update().where(
            snapshots.c.workspace_id == ws, snapshots.c.profile_id == "sim-c").values(
            control=True))
    body = await simulate("sim-c")
    assert [s["step"] for s in body["sends"]] == ["r"]
    assert {t["detail"]["rule"] for t in body["trace"] if t["outcome"] == "suppressed"} == {
        "control_group"}


async def test_quiet_hours_in_two_zones(stack: Stack) -> None:
    ws, admin = await workspace(stack)
    harness = stack.journey
    real = datetime.now(UTC)
    # 23:30 UTC: 08:30 in Tokyo (quiet until 09:00), 23:30 in Lisbon in winter (quiet).
    # And 12:00 UTC: 21:00 in Tokyo (quiet), 12:00 in Lisbon (not quiet).
    noon = real.replace(hour=12, minute=0, second=0, microsecond=0)
    if noon < real:
        noon += timedelta(days=1)
    harness.clock.offset = noon - real
    try:
        await put_policy(stack, admin, {"quiet_hours": {"start": "21:00", "end": "09:00"}})
        await customers(stack, ws, ["tokyo"], timezone="Asia/Tokyo")
        await customers(stack, ws, ["lisbon"], timezone="Europe/Lisbon")
        assert (await broadcast(stack, admin, "qh", {"segment": "vip", "template": "news"})
                ).status_code == 200
        r = await harness.http.post(f"{harness.url}/v1/broadcasts/qh/preview", headers=admin)
        assert r.json()["recipients"] == 1 and r.json()["suppressed"] == {"quiet_hours": 1}
        await harness.http.post(f"{harness.url}/v1/broadcasts/qh/send", headers=admin)
        [sent] = await harness.sends(ws, 1)
        assert sent["profile_id"] == "lisbon"
        [held] = await harness.until(lambda: [e for e in stack.outcomes
                                              if e["workspace_id"] == ws])
        tokyo_morning = datetime.now(ZoneInfo("Asia/Tokyo")).replace(
            hour=9, minute=0, second=0, microsecond=0)
        assert held["profile_id"] == "tokyo" and held["status"] == "deferred"
        assert held["rule"] == "quiet_hours" and held["window"] == "21:00-09:00"
        until = datetime.fromisoformat(held["until"])
        assert until.astimezone(ZoneInfo("Asia/Tokyo")).time() == tokyo_morning.time()
        r = await harness.http.get(f"{harness.url}/v1/profiles/tokyo/broadcasts", headers=admin)
        [why] = r.json()["items"]
        assert (why["broadcast"], why["status"], why["reason"]) == ("qh", "pending",
                                                                    "quiet_hours")
        assert datetime.fromisoformat(why["due_at"]) == until and why["held_since"]
        key = admin["Authorization"].split()[1]
        out = await asyncio.to_thread(CliRunner().invoke, cli, [
            "broadcasts", "why", "tokyo", "--url", harness.url, "--admin-key", key])
        assert out.exit_code == 0 and "quiet_hours" in out.output, out.output
        harness.clock.offset = until + timedelta(seconds=1) - real
        await harness.sends(ws, 2)
        done = await finished(stack, admin, "qh")
        assert done["counts"]["sent"] == 2
    finally:
        harness.clock.offset = timedelta(0)


async def test_the_cli_applies_previews_sends_and_shows(stack: Stack, tmp_path: Any) -> None:
    ws, admin = await workspace(stack)
    await customers(stack, ws, ["cli1", "cli2"])
    key = admin["Authorization"].split()[1]
    auth = ["--url", stack.journey.url, "--admin-key", key]
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("caps:\n  - {channel: email, max: 5, per: P1D}\n"
                           "control_group_percent: 0\n")
    out = await asyncio.to_thread(CliRunner().invoke, cli, ["policy", "apply", "-f",
                                                            str(policy_file), *auth])
    assert out.exit_code == 0, out.output
    out = await asyncio.to_thread(CliRunner().invoke, cli, ["policy", "show", *auth])
    assert out.exit_code == 0 and json.loads(out.output)["policy"]["caps"][0]["max"] == 5
    file = tmp_path / "b.yaml"
    file.write_text("key: hello\nsegment: vip\ntemplate: news\n")
    for args in (["apply", "-f", str(file)], ["preview", "hello"], ["send", "hello"]):
        out = await asyncio.to_thread(CliRunner().invoke, cli, ["broadcasts", *args, *auth])
        assert out.exit_code == 0, out.output
    await finished(stack, admin, "hello")
    out = await asyncio.to_thread(CliRunner().invoke, cli, ["broadcasts", "show", "hello",
                                                            "--json", *auth])
    assert json.loads(out.output)["counts"]["sent"] == 2
    out = await asyncio.to_thread(CliRunner().invoke, cli, ["broadcasts", "list", *auth])
    assert "hello" in out.output and "sent" in out.output
    out = await asyncio.to_thread(CliRunner().invoke, cli, ["broadcasts", "send", "hello",
                                                            *auth])
    assert out.exit_code != 0 and "was sent" in out.output, out.output


async def test_journey_save_checks_templates_segments_and_warns_of_a_looser_cap(
        stack: Stack) -> None:
    ws, admin = await workspace(stack)
    await put_policy(stack, admin, {"caps": [{"channel": "email", "max": 2, "per": "P1D"}]})
    url = f"{stack.journey.url}/v1/journeys"
    doc = _journey(1)
    doc["stages"][0]["steps"][0]["send"]["template"] = "missing"
    r = await stack.journey.http.post(url, headers=admin, json=doc)
    assert r.status_code == 400
    assert r.json()["errors"][0]["field"] == "stages.0.steps.0.send.template"
    doc = _journey(1) | {"stages": [{"key": "s", "enter": {"segment_entered": "nope"}}]}
    r = await stack.journey.http.post(url, headers=admin, json=doc)
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == \
        "stages.0.enter.segment_entered"
    doc = _journey(1) | {"frequency_cap": {"email": {"max": 5, "per": "PT12H"}}}
    r = await stack.journey.http.post(url, headers=admin, json=doc)
    assert r.status_code == 201, r.text
    assert r.json()["warnings"] == ["frequency_cap.email: looser than the policy's caps.0; "
                                    "the stricter applies"]


async def test_include_existing_enters_the_segments_members_once(stack: Stack) -> None:
    ws, admin = await workspace(stack)
    ids = [f"m{n}" for n in range(6)]
    await customers(stack, ws, ids)
    await customers(stack, ws, ["outsider"], segments=[])
    doc = {"key": "vip-welcome", "name": "VIP", "reentry": "once",
           "stages": [{"key": "s", "enter": {"segment_entered": "vip", "include_existing": True},
                       "steps": [{"id": "m", "send": {"channel": "email",
                                                      "template": "promo"}}]}]}
    r = await stack.journey.http.post(f"{stack.journey.url}/v1/journeys", headers=admin,
                                      json=doc)
    assert r.status_code == 201, r.text
    r = await stack.journey.http.post(f"{stack.journey.url}/v1/journeys/vip-welcome/publish",
                                      headers=admin)
    assert r.status_code == 200 and r.json()["existing_members_queued"] == 6, r.text
    sent = await stack.journey.sends(ws, 6)
    assert sorted(c["profile_id"] for c in sent) == ids
    assert {c["journey"]["key"] for c in sent} == {"vip-welcome"}
    await stack.journey.publish(admin, doc)  # a new version: nobody enters twice
    await asyncio.sleep(1.0)
    assert len(stack.journey.raw_sends(ws)) == 6
    r = await stack.journey.http.get(f"{stack.journey.url}/v1/broadcasts", headers=admin)
    assert r.json()["items"] == []
    bad = copy.deepcopy(doc)
    bad["stages"][0]["enter"] = {"event": "X", "include_existing": True}
    r = await stack.journey.http.post(f"{stack.journey.url}/v1/journeys/validate",
                                      headers=admin, json=bad)
    assert r.status_code == 400


async def test_journeys_send_nothing_to_the_control_group_and_count_it(stack: Stack) -> None:
    ws, admin = await workspace(stack)
    await put_policy(stack, admin, {"control_group_percent": 40})
    await stack.journey.publish(admin, _journey(1) | {"reentry": "once"})
    ids = [f"g{n:02d}" for n in range(30)]
    for pid in ids:
        await stack.journey.event(ws, pid, "Go1")

    def suppressed() -> list[dict[str, Any]]:
        return [e for e in stack.outcomes if e["workspace_id"] == ws
                and e["status"] == "suppressed"]

    async def settled() -> dict[str, Any] | None:
        r = await stack.journey.http.get(f"{stack.journey.url}/v1/journeys/j1/stats",
                                         headers=admin)
        sends = r.json()["sends"].get("s", {}).get("hi", {})
        return sends if sum(sends.values()) == 30 else None
    sends = await stack.journey.until(settled, timeout=30)
    assert 0 < sends["suppressed"] < 30 and sends["sent"] == 30 - sends["suppressed"]
    members = {e["profile_id"] for e in await stack.journey.until(
        lambda: suppressed() if len(suppressed()) == sends["suppressed"] else None)}
    assert all(e["rule"] == "control_group" and e["journey"]["key"] == "j1"
               for e in suppressed())
    sent = await stack.journey.sends(ws, sends["sent"])
    assert not members & {c["profile_id"] for c in sent}
    # Membership never changes: with the percentage at 0, members seen before stay members.
    await put_policy(stack, admin, {"control_group_percent": 0})
    await stack.journey.publish(admin, _journey(2))
    for pid in sorted(members)[:3] + ["newcomer"]:
        await stack.journey.event(ws, pid, "Go2")
    await stack.journey.until(lambda: len(suppressed()) == sends["suppressed"] + 3)
    await stack.journey.sends(ws, sends["sent"] + 1)
    assert {c["profile_id"] for c in stack.journey.raw_sends(ws)
            if c["journey"]["key"] == "j2"} == {"newcomer"}


async def test_scheduled_and_local_time_broadcasts(stack: Stack) -> None:
    ws, admin = await workspace(stack)
    harness = stack.journey
    real = datetime.now(UTC)
    ten = real.replace(hour=10, minute=0, second=0, microsecond=0)
    if ten < real:
        ten += timedelta(days=1)
    harness.clock.offset = ten - real  # 10:00 UTC: 19:00 in Tokyo, 10:00 or 11:00 in Lisbon
    try:
        await customers(stack, ws, ["tokyo"], timezone="Asia/Tokyo")
        await customers(stack, ws, ["lisbon"], timezone="Europe/Lisbon")
        r = await broadcast(stack, admin, "noon", {"segment": "vip", "template": "news",
                                                   "local_time": "12:00"})
        assert r.status_code == 200, r.text
        r = await harness.http.post(f"{harness.url}/v1/broadcasts/noon/send", headers=admin)
        assert r.json()["status"] == "sending" and r.json()["counts"]["pending"] == 2
        lisbon_noon = ten.astimezone(ZoneInfo("Europe/Lisbon")).replace(hour=12).astimezone(UTC)
        tokyo_noon = (ten.astimezone(ZoneInfo("Asia/Tokyo")) + timedelta(days=1)).replace(
            hour=12).astimezone(UTC)  # 12:00 already passed there today
        due = {}
        for pid in ("tokyo", "lisbon"):
            r = await harness.http.get(f"{harness.url}/v1/profiles/{pid}/broadcasts",
                                       headers=admin)
            due[pid] = datetime.fromisoformat(r.json()["items"][0]["due_at"])
        assert due == {"tokyo": tokyo_noon, "lisbon": lisbon_noon}
        await asyncio.sleep(0.5)
        assert harness.raw_sends(ws) == []
        harness.clock.offset = lisbon_noon + timedelta(seconds=1) - real
        [first] = await harness.sends(ws, 1)
        assert first["profile_id"] == "lisbon"
        harness.clock.offset = tokyo_noon + timedelta(seconds=1) - real
        await harness.sends(ws, 2)
        await finished(stack, admin, "noon")
        # send_at: scheduled, then sent when the moment comes.
        later = (tokyo_noon + timedelta(hours=1)).isoformat()
        assert (await broadcast(stack, admin, "later", {
            "segment": "vip", "template": "promo", "send_at": later})).status_code == 200
        r = await harness.http.post(f"{harness.url}/v1/broadcasts/later/send", headers=admin)
        assert r.json()["status"] == "scheduled" and r.json()["start_at"] == later
        r = await harness.http.post(f"{harness.url}/v1/broadcasts/later/cancel", headers=admin)
        assert r.json()["status"] == "cancelled"
        r = await harness.http.post(f"{harness.url}/v1/broadcasts/later/send", headers=admin)
        assert r.json()["status"] == "scheduled"
        await asyncio.sleep(0.5)
        assert len(harness.raw_sends(ws)) == 2
        harness.clock.offset = tokyo_noon + timedelta(hours=1, seconds=1) - real
        await harness.sends(ws, 4)
        done = await finished(stack, admin, "later")
        assert done["counts"]["sent"] == 2
    finally:
        harness.clock.offset = timedelta(0)


async def test_max_per_second_paces_all_broadcasts_of_a_workspace(stack: Stack) -> None:
    ws, admin = await workspace(stack)
    await put_policy(stack, admin, {"max_per_second": 8})
    await customers(stack, ws, [f"r{n:02d}" for n in range(16)])
    for key, template in (("one", "news"), ("two", "promo")):
        assert (await broadcast(stack, admin, key, {"segment": "vip", "template": template})
                ).status_code == 200
    started = asyncio.get_running_loop().time()
    for key in ("one", "two"):
        r = await stack.journey.http.post(f"{stack.journey.url}/v1/broadcasts/{key}/send",
                                          headers=admin)
        assert r.status_code == 200
    await stack.journey.sends(ws, 32, timeout=30)
    elapsed = asyncio.get_running_loop().time() - started
    # 32 sends at 8/s, with at most one second's worth at once: at least three seconds.
    assert elapsed >= 2.9, elapsed


async def test_holdout_uplift_leaves_the_control_group_out_and_values_goals(
        stack: Stack) -> None:
    """Control-group members are in neither arm of a journey's holdout uplift; revenue per
    customer comes from the goal events' value under profile's `revenue_properties`, which
    the engine reads with the workspace's own key (TOUCHPOINT_SERVICE_KEYS)."""
    ws, admin = await workspace(stack, stack.served)
    r = await stack.journey.http.put(f"{stack.profile}/v1/profile-settings/conventions",
                                     headers=admin,
                                     json={"revenue_properties": ["amount", "revenue"]})
    assert r.status_code == 200, r.text
    await _holdout_uplift(stack, ws, admin)


async def test_each_workspace_conventions_are_read_with_its_own_key(stack: Stack) -> None:
    """Two workspaces with their own zone and revenue_properties: journey reads each with
    that workspace's key; a workspace it holds no key for gets the defaults, not another's;
    a key filed under the wrong workspace is refused."""
    (a, admin_a), (b, admin_b), (c, _) = [await workspace(stack) for _ in range(3)]
    for admin, conventions in ((admin_a, {"timezone": "Asia/Tokyo",
                                          "revenue_properties": ["amount"]}),
                               (admin_b, {"timezone": "Europe/Paris",
                                          "revenue_properties": ["value", "total"]})):
        r = await stack.journey.http.put(f"{stack.profile}/v1/profile-settings/conventions",
                                         headers=admin, json=conventions)
        assert r.status_code == 200, r.text
    keys = {ws: admin["Authorization"].split()[1] for ws, admin in ((a, admin_a),
                                                                    (b, admin_b))}
    directory = Directory(JourneySettings(**stack.journey.settings.model_dump(exclude={
        "service_keys"}), service_keys=keys | {"ws-misfiled": keys[a]}))
    try:
        assert await zones(directory, {a, b, c, "ws-misfiled"}) == {
            a: "Asia/Tokyo", b: "Europe/Paris", c: "UTC", "ws-misfiled": "UTC"}
        assert await revenue_names(directory, {a, b, c, "ws-misfiled"}) == {
            a: ("amount",), b: ("value", "total")}
    finally:
        await directory.close()


async def _holdout_uplift(stack: Stack, ws: str, admin: dict[str, str]) -> None:
    http, harness = stack.journey.http, stack.journey
    await put_policy(stack, admin, {"control_group_percent": 40})
    await harness.publish(admin, _journey(1) | {
        "reentry": "once", "holdout_percent": 50,
        "goal": {"event": "Buy", "within": "P14D"}})
    ids = [f"u{n:02d}" for n in range(40)]
    for pid in ids:
        await harness.event(ws, pid, "Go1")

    async def stats() -> dict[str, Any]:
        r = await http.get(f"{harness.url}/v1/journeys/j1/stats", headers=admin)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body
    await harness.until(lambda: _entered(stats, 40), timeout=30)
    # Half of them buy: amounts 10, 20, 30, 40 in turn ("revenue" is not read: "amount"
    # comes first); one buys with no value at all and counts 0.
    worth = {pid: float(10 * (n % 4 + 1)) for n, pid in enumerate(ids[:19])} | {ids[19]: 0.0}
    for pid, amount in worth.items():
        await harness.event(ws, pid, "Buy", **({"amount": amount, "revenue": 999}
                                               if amount else {}))
    async with harness.engine.connect() as conn:
        async def converted() -> bool:
            n = (await conn.execute(select(func.count()).select_from(instances).where(
                instances.c.workspace_id == ws,
                instances.c.goal_at.is_not(None)))).scalar_one()
            return bool(n == 20)
        await harness.until(converted, timeout=30)
        arm = dict((await conn.execute(select(instances.c.profile_id, instances.c.holdout)
                                       .where(instances.c.workspace_id == ws))).all())
        control = {p for (p,) in (await conn.execute(select(snapshots.c.profile_id).where(
            snapshots.c.workspace_id == ws, snapshots.c.control))).all()}
    body = (await stats())["goal"]
    groups = {flag: [p for p in ids if arm[p] is flag and p not in control]
              for flag in (False, True)}
    assert control and all(len(g) >= 2 for g in groups.values())
    assert body["control_group_excluded"] == len(control)
    for name, flag in (("treated", False), ("holdout", True)):
        people = groups[flag]
        values = [worth.get(p, 0.0) for p in people]
        assert body[name]["customers"] == len(people)
        assert body[name]["converted"] == len([p for p in people if p in worth])
        assert body[name]["revenue"] == sum(values)
        assert body[name]["revenue_per_customer"] == pytest.approx(sum(values) / len(values))
    assert body["treated"]["customers"] + body["holdout"]["customers"] + len(control) == 40
    samples = [_mean_var([worth.get(p, 0.0) for p in groups[flag]]) for flag in (False, True)]
    expected = welch(samples[0], samples[1])
    money = body["revenue_per_customer"]
    assert money["ci_method"] == "welch" and money["difference"] == expected["difference"]
    assert money["ci95"] == expected["ci95"]


async def _entered(stats: Any, n: int) -> bool:
    return bool((await stats())["customers"] == n)


def _mean_var(values: list[float]) -> tuple[float, float, int]:
    mean = sum(values) / len(values)
    return mean, sum((v - mean) ** 2 for v in values) / (len(values) - 1), len(values)
