"""Issue 13.1: one event must not poison a profile. Absurd timestamps are dated at receipt;
a profile already holding +-infinity still answers and recomputes; one workspace's or one
profile's failure never stops the scheduled pass; absurd rule durations are a 400 at save."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from services.profile.recompute import RecomputeSchedule
from shared.db import create_engine
from shared.testing.topics import read_topic
from tests.integration.profile_support import eventually
from tests.security.support import Stack

pytestmark = pytest.mark.integration
ABSURD = ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "1969-12-31T23:59:59Z"]


async def _profile(stack: Stack, user: str) -> dict[str, Any] | None:
    r = await stack.http.get(stack.url("profile", "/v1/profiles/lookup"),
                             params={"user_id": user}, headers=stack.a.admin)
    assert r.status_code in (200, 404), r.text
    return r.json() if r.status_code == 200 else None


async def _track(stack: Stack, body: dict[str, Any]) -> None:
    r = await stack.http.post(stack.url("ingest", "/v1/track"), json=body, auth=stack.a.write)
    assert r.status_code == 200, r.text


async def test_absurd_timestamps_are_dated_at_receipt_and_kept_as_original(stack: Stack) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    ids = [f"ts-{uuid.uuid4().hex}" for _ in ABSURD]
    tomorrow = (datetime.now(UTC) + timedelta(hours=25)).isoformat()
    ids.append(f"ts-{uuid.uuid4().hex}")
    for message_id, stamp in zip(ids, [*ABSURD, tomorrow], strict=True):
        await _track(stack, {"userId": user, "event": "Viewed", "timestamp": stamp,
                             "messageId": message_id})
    # A sentAt correction that overflows is a broken clock too, not a 400.
    await _track(stack, {"userId": user, "event": "Viewed", "messageId": "ts-overflow-" + user,
                         "timestamp": "9999-12-31T23:00:00Z", "sentAt": "0001-01-02T00:00:00Z"})
    ids.append("ts-overflow-" + user)

    def all_in(records: list[Any]) -> bool:
        return {orjson.loads(r.value)["id"] for r in records} >= set(ids)

    records = await read_topic(stack.settings.kafka_bootstrap, stack.settings.topic("events"),
                               all_in)
    events = [e for e in (orjson.loads(r.value) for r in records) if e["id"] in ids]
    assert len(events) == len(ids)
    for event in events:
        assert event["timestamp"] == event["received_at"], event
        assert event["original_timestamp"]  # the client's value, kept
    # The profile took every event and a normal one after them: nothing dead-lettered.
    await _track(stack, {"userId": user, "event": "Viewed"})
    profile = await eventually(lambda: _counted(stack, user, len(ids) + 1))
    first_seen = datetime.fromisoformat(profile["first_seen_at"])
    assert datetime.now(UTC) - timedelta(hours=1) < first_seen <= datetime.now(UTC)


async def _counted(stack: Stack, user: str, count: int) -> dict[str, Any] | None:
    profile = await _profile(stack, user)
    return profile if profile and profile["event_count"] >= count else None


async def test_a_profile_holding_infinity_still_answers_and_recomputes(stack: Stack) -> None:
    """Profiles stored before the fix: +-infinity in every timestamp column."""
    user = f"u-{uuid.uuid4().hex[:8]}"
    await _track(stack, {"userId": user, "event": "Order Completed",
                         "properties": {"order_id": "o1", "revenue": 20}})
    profile = await eventually(lambda: _counted(stack, user, 1))
    engine = create_engine(stack.settings.database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(
                "UPDATE profile.profiles SET first_seen_at = '-infinity', "
                "last_seen_at = 'infinity', first_order_at = '-infinity', "
                "last_order_at = 'infinity' WHERE id = :id"), {"id": profile["id"]})
    finally:
        await engine.dispose()
    for path in ("", "/metrics", "/events", "/segments", "/consent"):
        r = await stack.http.get(stack.url("profile", f"/v1/profiles/{profile['id']}{path}"),
                                 headers=stack.a.admin)
        assert r.status_code == 200, (path, r.text)
    r = await stack.http.post(stack.url("profile", "/v1/profile-settings/recompute"),
                              headers=stack.a.admin)
    assert r.status_code == 200, r.text
    await _track(stack, {"userId": user, "event": "Viewed"})  # later events still apply
    await eventually(lambda: _counted(stack, user, 2))


def _failures(scope: str) -> float:
    return REGISTRY.get_sample_value("touchpoint_profile_recompute_failures_total",
                                     {"scope": scope}) or 0.0


async def test_scheduled_recompute_isolates_a_failing_workspace_and_profile(
        stack: Stack) -> None:
    broken, healthy = f"ws-broken-{uuid.uuid4().hex[:8]}", f"ws-ok-{uuid.uuid4().hex[:8]}"
    good, bad = str(uuid.uuid4()), str(uuid.uuid4())
    engine = create_engine(stack.settings.database_url)
    insert = text("INSERT INTO profile.profiles (id, workspace_id, first_seen_at, last_seen_at, "
                  "order_count, gross_revenue, first_order_at, last_order_at) VALUES (:id, :ws, "
                  "now(), now(), 1, 10, :first, now())")
    try:
        async with engine.begin() as conn:
            await conn.execute(insert, {"id": str(uuid.uuid4()), "ws": broken,
                                        "first": datetime.now(UTC) - timedelta(days=3)})
            await conn.execute(insert, {"id": good, "ws": healthy,
                                        "first": datetime.now(UTC) - timedelta(days=3)})
            # An order count without a first order: one profile the pass cannot score.
            await conn.execute(insert, {"id": bad, "ws": healthy, "first": None})
            # Settings no pass can read: the whole workspace fails.
            await conn.execute(text(
                "INSERT INTO profile.workspace_settings (workspace_id, conventions) VALUES "
                "(:ws, CAST(:c AS jsonb))"),
                {"ws": broken, "c": orjson.dumps({"ltv_horizon_days": "never"}).decode()})
            # A rule stored before save-time bounds existed is read as it was, and evaluates.
            await conn.execute(text(
                "INSERT INTO profile.segments (workspace_id, key, name, rule) VALUES "
                "(:ws, 'forever', 'forever', CAST(:rule AS jsonb))"),
                {"ws": healthy, "rule": orjson.dumps({"all": [
                    {"field": "profile.last_seen_at", "op": "within_last", "value": "P99999Y"},
                    {"performed": {"event": "Viewed", "within": "P99999Y"}}]}).decode()})
        workspace_failures, profile_failures = _failures("workspace"), _failures("profile")
        await RecomputeSchedule(engine, stack.settings, None, 3600).run_once()
        async with engine.connect() as conn:
            done = (await conn.execute(text(
                "SELECT recomputed_at FROM profile.workspace_settings WHERE workspace_id = :ws"),
                {"ws": healthy})).scalar_one_or_none()
            scored = (await conn.execute(text(
                "SELECT rfm FROM profile.profiles WHERE id = :id"), {"id": good})).scalar_one()
    finally:
        await engine.dispose()
    assert done is not None  # the healthy workspace was recomputed ...
    assert scored  # ... its good profile scored ...
    assert _failures("workspace") >= workspace_failures + 1  # ... the broken workspace and
    assert _failures("profile") >= profile_failures + 1  # the bad profile counted, not fatal


@pytest.mark.parametrize("rule", [
    {"field": "profile.last_seen_at", "op": "within_last", "value": "P99999Y"},
    {"field": "profile.last_seen_at", "op": "within_last", "value": "P101Y"},
    {"field": "profile.traits.signup", "op": "eq", "value": "0001-01-01T00:00:00Z"},
    {"field": "profile.traits.signup", "op": "in", "value": ["2020-01-01", "9999-12-31"]},
    {"performed": {"event": "Viewed", "within": "P99999Y"}},
])
async def test_segment_rule_out_of_range_is_a_400(stack: Stack, rule: dict[str, Any]) -> None:
    r = await stack.http.put(stack.url("profile", "/v1/segments/absurd"), headers=stack.a.admin,
                             json={"name": "absurd", "rule": rule})
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"]


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def _journey(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "key": f"j-{uuid.uuid4().hex[:8]}", "name": "absurd",
        "stages": [{"key": "s", "enter": {"event": "Viewed"},
                    "steps": [{"id": "w", "wait": "P1D"}]}]}
    doc.update(changes)
    return doc


@pytest.mark.parametrize("doc", [
    _journey(stages=[{"key": "s", "enter": {"event": "Viewed"},
                      "steps": [{"id": "w", "wait": "P99999Y"}]}]),
    _journey(stages=[{"key": "s", "enter": {"event": "Viewed", "where": {
        "field": "event.properties.at", "op": "within_last", "value": "P99999Y"}}}]),
    _journey(stages=[{"key": "s", "enter": {"condition": {
        "field": "profile.traits.born", "op": "eq", "value": "1492-10-12"}}}]),
    _journey(goal={"event": "Bought", "within": "P200Y"}),
    _journey(idle_timeout="P99999Y"),
    _journey(reentry_cooldown="P99999Y"),
    # Traits an update_profile step would publish: nested past what events may hold.
    _journey(stages=[{"key": "s", "enter": {"event": "Viewed"},
                      "steps": [{"id": "u", "update_profile": {"deep": _nested(40)}}]}]),
])
async def test_journey_duration_or_date_out_of_range_is_a_400(stack: Stack,
                                                              doc: dict[str, Any]) -> None:
    for path in ("/v1/journeys/validate", "/v1/journeys"):
        r = await stack.http.post(stack.url("journey", path), headers=stack.a.admin, json=doc)
        assert r.status_code == 400, (path, r.text)
        assert r.headers["content-type"] == "application/problem+json"


async def test_sane_rules_still_save(stack: Stack) -> None:
    r = await stack.http.put(stack.url("profile", "/v1/segments/recent-viewers"),
                             headers=stack.a.admin, json={"name": "recent", "rule": {"all": [
                                 {"field": "profile.last_seen_at", "op": "within_last",
                                  "value": "P100Y"},
                                 {"performed": {"event": "Viewed", "within": "P30D"}}]}})
    assert r.status_code == 200, r.text
    r = await stack.http.post(stack.url("journey", "/v1/journeys/validate"),
                              headers=stack.a.admin, json=_journey())
    assert r.status_code == 200, r.text


async def test_a_consent_decision_dated_year_1_is_a_400(stack: Stack) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    await _track(stack, {"userId": user, "event": "Viewed"})
    profile = await eventually(lambda: _counted(stack, user, 1))
    for at in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"):
        r = await stack.http.put(stack.url("profile", f"/v1/profiles/{profile['id']}/consent"),
                                 headers=stack.a.admin,
                                 json={"channel": "email", "subscribed": False, "at": at})
        assert r.status_code == 400, r.text
