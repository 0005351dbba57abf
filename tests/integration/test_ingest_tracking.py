"""Every Segment call type lands on `touchpoint.events`, through the real broker; the real
`segment-analytics-python` client delivers its batches; messageId dedupe across restarts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import ConsumerRecord
from segment.analytics.client import Client as SegmentClient

from services.ingest.app import create_app
from shared.settings import Settings
from tests.support.ready import wait_ready
from tests.support.servers import serve_app
from tests.support.topics import read_topic, with_own_topics

pytestmark = pytest.mark.integration


@pytest.fixture
async def cfg(settings: Settings, unique: str) -> Settings:
    """The session's settings with this test's own topics."""
    return await with_own_topics(settings, f"ingest-{unique}")


def values(records: list[ConsumerRecord]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


def with_ids(ids: set[str]) -> Callable[[list[ConsumerRecord]], bool]:
    return lambda records: ids <= {v["id"] for v in values(records)}


async def landed(settings: Settings, ids: set[str]) -> dict[str, list[ConsumerRecord]]:
    """Records on the events topic with these ids, by id (waits until each one is there)."""
    records = await read_topic(settings.kafka_bootstrap, settings.topic("events"), with_ids(ids))
    out: dict[str, list[ConsumerRecord]] = {}
    for record in records:
        message_id = orjson.loads(record.value)["id"]
        if message_id in ids:
            out.setdefault(message_id, []).append(record)
    return out


async def test_every_call_type_lands_on_the_topic(cfg: Settings,
                                                  write_auth: tuple[str, str],
                                                  unique: str) -> None:
    sent_at = datetime.now(UTC) - timedelta(hours=1)  # the client's clock is an hour behind
    happened = sent_at - timedelta(seconds=30)
    common = {"timestamp": happened.isoformat(), "sentAt": sent_at.isoformat(),
              "context": {"ip": "203.0.113.9", "library": {"name": "test"}},
              "integrations": {"All": True}}
    calls = {
        "track": {"userId": f"u-{unique}", "event": "Order Completed",
                  "properties": {"revenue": 42.5, "currency": "EUR"}},
        "identify": {"userId": f"u-{unique}", "traits": {"email": "ada@example.com"}},
        "page": {"anonymousId": f"a-{unique}", "name": "Home", "category": "Landing",
                 "properties": {"path": "/"}},
        "screen": {"userId": f"u-{unique}", "name": "Cart"},
        "group": {"userId": f"u-{unique}", "groupId": "acme", "traits": {"plan": "pro"}},
        "alias": {"userId": f"u-{unique}", "previousId": f"a-{unique}"},
    }
    async with serve_app(create_app(cfg)) as url, httpx.AsyncClient(timeout=10) as http:
        await wait_ready(http, url)
        for call_type, call in calls.items():
            payload = {**common, **call, "messageId": f"{call_type}-{unique}"}
            before = datetime.now(UTC)
            r = await http.post(f"{url}/v1/{call_type}", auth=write_auth, json=payload)
            assert r.status_code == 200, r.text
            assert r.json() == {"success": True}
    got = await landed(cfg, {f"{t}-{unique}" for t in calls})
    for call_type, call in calls.items():
        (record,) = got[f"{call_type}-{unique}"]
        event = orjson.loads(record.value)
        assert event["type"] == call_type and event["workspace_id"] == "default"
        customer = call.get("userId") or call.get("anonymousId")
        assert record.key == f"default:{customer}".encode()
        assert dict(record.headers)["schema"] == b"events/v1"
        for camel, snake in (("event", "event"), ("name", "name"), ("category", "category"),
                             ("groupId", "group_id"), ("previousId", "previous_id"),
                             ("properties", "properties"), ("traits", "traits")):
            if camel in call:
                assert event[snake] == call[camel], (call_type, camel)
        assert event["context"] == common["context"]
        assert event["integrations"] == {"All": True}
        # receivedAt is the server's; the timestamp is moved by the client's clock skew.
        received = datetime.fromisoformat(event["received_at"])
        assert before - timedelta(seconds=5) <= received <= datetime.now(UTC)
        corrected = datetime.fromisoformat(event["timestamp"])
        assert corrected == happened + (received - sent_at)
        assert datetime.fromisoformat(event["original_timestamp"]) == happened


async def test_segment_python_sdk_delivers_its_batches(cfg: Settings,
                                                       write_auth: tuple[str, str],
                                                       unique: str) -> None:
    errors: list[Any] = []
    async with serve_app(create_app(cfg)) as url, httpx.AsyncClient(timeout=10) as http:
        await wait_ready(http, url)
        for gzip in (False, True):
            client = SegmentClient(write_key=write_auth[0], host=url, gzip=gzip, sync_mode=False,
                                   on_error=lambda exc, batch: errors.append((exc, batch)),
                                   max_retries=1)
            user, anon = f"sdk-{unique}-{gzip}", f"anon-{unique}-{gzip}"

            def drive(c: SegmentClient = client, u: str = user, a: str = anon) -> list[str]:
                ids = [
                    c.identify(u, {"email": "sdk@example.com", "plan": "pro"})[1]["messageId"],
                    c.track(u, "Trial Started", {"source": "sdk"})[1]["messageId"],
                    c.page(u, "Docs", "Install", {"path": "/docs"})[1]["messageId"],
                    c.screen(u, "App", "Home")[1]["messageId"],
                    c.group(u, "acme", {"name": "Acme"})[1]["messageId"],
                    c.alias(a, u)[1]["messageId"],
                ]
                c.flush()
                c.join()
                return ids

            ids = await asyncio.to_thread(drive)
            assert errors == []
            got = await landed(cfg, set(ids))
            types = [orjson.loads(got[i][0].value)["type"] for i in ids]
            assert types == ["identify", "track", "page", "screen", "group", "alias"]
            track = orjson.loads(got[ids[1]][0].value)
            assert track["event"] == "Trial Started" and track["user_id"] == user
            assert track["context"]["library"]["name"] == "analytics-python"


async def test_retried_message_ids_are_accepted_once_even_across_a_restart(
        cfg: Settings, write_auth: tuple[str, str], unique: str) -> None:
    first = {"userId": f"u-{unique}", "event": "Paid", "messageId": f"once-{unique}"}
    batch = [{"type": "track", "userId": f"u-{unique}", "event": "Viewed",
              "messageId": f"b{i}-{unique}"} for i in range(3)]
    async with serve_app(create_app(cfg)) as url, httpx.AsyncClient(timeout=10) as http:
        await wait_ready(http, url)
        for _ in range(3):  # an SDK retrying after timeouts
            r = await http.post(f"{url}/v1/track", auth=write_auth, json=first)
            assert r.status_code == 200 and r.json() == {"success": True}
        r = await http.post(f"{url}/v1/batch", auth=write_auth,
                            json={"batch": [*batch, batch[0]]})  # repeated inside a request too
        assert r.json() == {"success": True, "accepted": 4, "duplicates": 1}
    # A new process (same database): the dedupe state is durable.
    async with serve_app(create_app(cfg)) as url, httpx.AsyncClient(timeout=10) as http:
        await wait_ready(http, url)
        r = await http.post(f"{url}/v1/batch", auth=write_auth,
                            json={"batch": [{**first, "type": "track"}, *batch,
                                            {**first, "type": "track",
                                             "messageId": f"new-{unique}"}]})
        assert r.json() == {"success": True, "accepted": 5, "duplicates": 4}
        # The same messageId in another workspace is a different event.
    ids = {first["messageId"], f"new-{unique}", *(b["messageId"] for b in batch)}
    got = await landed(cfg, ids)
    await asyncio.sleep(1)  # give any duplicate time to show up, then read everything again
    got = await landed(cfg, ids)
    assert {i: len(records) for i, records in got.items()} == {i: 1 for i in ids}


async def test_ids_are_deduplicated_per_workspace(cfg: Settings,
                                                  admin_headers: dict[str, str],
                                                  write_auth: tuple[str, str],
                                                  unique: str) -> None:
    event = {"userId": f"u-{unique}", "event": "X", "messageId": f"ws-{unique}"}
    other_ws = cfg.model_copy(update={"default_workspace": f"ws-{unique}",
                                           "bootstrap_write_key": f"tp_write_{uuid.uuid4().hex}",
                                           "bootstrap_admin_key": None})
    async with serve_app(create_app(cfg)) as url, httpx.AsyncClient(timeout=10) as http:
        await wait_ready(http, url)
        assert (await http.post(f"{url}/v1/track", auth=write_auth, json=event)).status_code == 200
    async with serve_app(create_app(other_ws)) as url, httpx.AsyncClient(timeout=10) as http:
        await wait_ready(http, url)
        r = await http.post(f"{url}/v1/track", json={**event, "writeKey":
                                                      other_ws.bootstrap_write_key})
        assert r.status_code == 200
    records = await read_topic(cfg.kafka_bootstrap, cfg.topic("events"),
                               lambda rs: sum(v["id"] == event["messageId"]
                                              for v in values(rs)) >= 2)
    workspaces = sorted(v["workspace_id"] for v in values(records) if v["id"] == event["messageId"])
    assert workspaces == sorted(["default", f"ws-{unique}"])


async def test_analytics_js_short_paths(cfg: Settings, write_auth: tuple[str, str],
                                        unique: str) -> None:
    """analytics.js posts `text/plain` JSON with `writeKey` in the body to /v1/t, /v1/p, ...
    and batches to /v1/b."""
    base = {"writeKey": write_auth[0], "anonymousId": f"a-{unique}", "userId": None,
            "context": {"library": {"name": "analytics.js", "version": "next-1.70.0"}},
            "_metadata": {"bundled": ["Segment.io"], "unbundled": []},
            "sentAt": "2026-11-25T10:00:00.000Z", "timestamp": "2026-11-25T09:59:59.000Z"}
    calls = {"t": {"type": "track", "event": "Clicked"}, "p": {"type": "page", "name": "Home"},
             "i": {"type": "identify", "traits": {"plan": "pro"}},
             "s": {"type": "screen", "name": "Cart"}, "g": {"type": "group", "groupId": "g1"},
             "a": {"type": "alias", "userId": f"u-{unique}", "previousId": f"a-{unique}"}}
    async with serve_app(create_app(cfg)) as url, httpx.AsyncClient(timeout=10) as http:
        await wait_ready(http, url)
        for letter, call in calls.items():
            body = {**base, **call, "messageId": f"ajs-{letter}-{unique}"}
            r = await http.post(f"{url}/v1/{letter}", content=orjson.dumps(body),
                                headers={"content-type": "text/plain"})
            assert r.status_code == 200 and r.json() == {"success": True}, (letter, r.text)
        r = await http.post(f"{url}/v1/b", headers={"content-type": "text/plain"},
                            content=orjson.dumps({"writeKey": write_auth[0],
                                                  "sentAt": base["sentAt"],
                                                  "batch": [{**base, **calls["t"],
                                                             "messageId": f"ajs-b-{unique}"}]}))
        assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    ids = {f"ajs-{letter}-{unique}" for letter in [*calls, "b"]}
    got = await landed(cfg, ids)
    assert {orjson.loads(got[f"ajs-{x}-{unique}"][0].value)["type"] for x in calls} == {
        c["type"] for c in calls.values()}
