"""Every class of bad input gets a 4xx problem+json naming the field (never a 500); write
keys are managed through the admin API; CORS lets browsers post."""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import httpx
import orjson
import pytest

from services.ingest.app import create_app
from shared.settings import Settings
from tests.support.ready import wait_ready
from tests.support.servers import serve_app
from tests.support.topics import with_own_topics

pytestmark = pytest.mark.integration


@pytest.fixture
async def cfg(settings: Settings, unique: str) -> Settings:
    """The session's settings with this test's own topics."""
    return await with_own_topics(settings, f"ingest-{unique}")


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


TRACK = {"userId": "u", "event": "X"}
# (path, request kwargs, status, field named in errors or None)
BAD: list[tuple[str, dict[str, Any], int, str | None]] = [
    ("track", {"content": b'{"userId": "u", "event": '}, 400, "body"),
    ("track", {"content": b"\xff\xfe not utf-8"}, 400, "body"),
    ("track", {"content": b'{"userId": "u", "event": "X", "n": NaN}'}, 400, "body"),
    ("track", {"json": ["not", "an", "object"]}, 400, "body"),
    ("track", {"json": {"event": "X"}}, 400, "userId"),
    ("track", {"json": {"userId": "", "anonymousId": " ", "event": "X"}}, 400, "userId"),
    ("track", {"json": {"userId": "u"}}, 400, "event"),
    ("track", {"json": {"userId": ["a"], "event": "X"}}, 400, "userId"),
    ("track", {"json": {"userId": "u", "event": 7}}, 400, "event"),
    ("track", {"json": {**TRACK, "properties": "cheap"}}, 400, "properties"),
    ("track", {"json": {**TRACK, "context": [1]}}, 400, "context"),
    ("track", {"json": {**TRACK, "timestamp": "yesterday"}}, 400, "timestamp"),
    ("track", {"json": {**TRACK, "messageId": "m" * 201}}, 400, "messageId"),
    ("track", {"json": {**TRACK, "messageId": "nul\u0000id"}}, 400, "messageId"),
    ("track", {"json": {**TRACK, "userId": "u" * 256}}, 400, "userId"),
    # A correction past the representable range is no longer a 400: the event is dated at
    # receipt (tests/security/test_bad_input.py).
    ("track", {"json": {**TRACK, "properties": nested(300)}}, 400, "body"),
    ("track", {"json": {**TRACK, "properties": {"blob": "x" * 40_000}}}, 413, "body"),
    ("identify", {"json": {"traits": {"email": "a@example.com"}}}, 400, "userId"),
    ("page", {"json": {"userId": "u", "name": 5}}, 400, "name"),
    ("group", {"json": {"userId": "u"}}, 400, "groupId"),
    ("alias", {"json": {"previousId": "a"}}, 400, "userId"),
    ("alias", {"json": {"userId": "u"}}, 400, "previousId"),
    ("batch", {"json": {"batch": {}}}, 400, "batch"),
    ("batch", {"json": {"batch": []}}, 400, "batch"),
    ("batch", {"json": {"batch": [TRACK], "sentAt": "soon"}}, 400, "sentAt"),
    ("batch", {"json": {"batch": [{"type": "track", "event": "X"}, 3]}}, 400, None),
    ("batch", {"content": b'{"batch": [{"a": "' + b"x" * 520_000 + b'"}]}'}, 413, None),
    ("batch", {"content": b'{"batch": [{"a": "' + b"x" * 600_000 + b'"}]}'}, 413, None),
    ("track", {"content": b"not gzip", "headers": {"content-encoding": "gzip"}}, 400, None),
    ("batch", {"content": gzip.compress(b" " * 2_000_000),
               "headers": {"content-encoding": "gzip"}}, 413, None),  # a gzip bomb
]


async def test_every_bad_input_class_is_a_clear_4xx(cfg: Settings,
                                                    write_auth: tuple[str, str]) -> None:
    async with serve_app(create_app(cfg)) as url, httpx.AsyncClient(timeout=10) as http:
        await wait_ready(http, url)
        for path, kwargs, status, field in BAD:
            r = await http.post(f"{url}/v1/{path}", auth=write_auth, **kwargs)
            case = (path, str(kwargs)[:120])
            assert r.status_code == status, (case, r.text[:300])
            assert r.headers["content-type"] == "application/problem+json", case
            body = r.json()
            assert body["status"] == status and body["title"], case
            if field:
                assert field in [e["field"] for e in body["errors"]], (case, body)
        # An all-invalid batch says, per call, what was wrong.
        r = await http.post(f"{url}/v1/batch", auth=write_auth,
                            json={"batch": [{"type": "track", "event": "X"}, 3]})
        assert [x["index"] for x in r.json()["rejected"]] == [0, 1]
        assert r.json()["rejected"][0]["errors"][0]["field"] == "userId"
        # Wrong methods and paths are problems too, not HTML.
        r = await http.get(f"{url}/v1/track", auth=write_auth)
        assert r.status_code == 405 and r.headers["content-type"] == "application/problem+json"
        assert (await http.post(f"{url}/v1/nope", auth=write_auth, json=TRACK)).status_code == 404


async def test_a_batch_accepts_its_good_calls_and_lists_the_bad(
        cfg: Settings, write_auth: tuple[str, str], unique: str) -> None:
    calls = [
        {"type": "track", "userId": "u", "event": "A", "messageId": f"good-a-{unique}"},
        {"type": "track", "userId": "u"},
        {"type": "nope", "userId": "u"},
        {"type": "identify", "userId": "u", "traits": {"bio": "x" * 40_000}},
        {"type": "page", "anonymousId": "a", "name": "Home", "messageId": f"good-b-{unique}"},
        {"type": "track", "userId": "u", "event": "B", "messageId": "nul\u0000"},
    ]
    async with serve_app(create_app(cfg)) as url, httpx.AsyncClient(timeout=10) as http:
        await wait_ready(http, url)
        r = await http.post(f"{url}/v1/import", auth=write_auth, json={"batch": calls})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["success"], body["accepted"], body["duplicates"]) == (True, 2, 0)
        rejected = {x["index"]: x for x in body["rejected"]}
        assert sorted(rejected) == [1, 2, 3, 5]
        assert rejected[1]["errors"][0]["field"] == "event"
        assert rejected[2]["errors"][0]["field"] == "type"
        assert rejected[3]["status"] == 413
        text = (await http.get(f"{url}/metrics")).text
        for outcome in ("published", "duplicate", "rejected", "unavailable"):
            assert f'touchpoint_ingest_events_total{{outcome="{outcome}"}}' in text


async def test_auth_write_keys_and_their_admin_api(cfg: Settings,
                                                   write_auth: tuple[str, str],
                                                   admin_headers: dict[str, str]) -> None:
    async with serve_app(create_app(cfg)) as url, httpx.AsyncClient(timeout=10) as http:
        await wait_ready(http, url)
        for kwargs in ({}, {"auth": ("tp_write_unknown", "")},
                       {"headers": {"authorization": "Basic !!not-base64!!"}},
                       {"auth": ("", "")}):
            r = await http.post(f"{url}/v1/track", json=TRACK, **kwargs)
            assert r.status_code == 401, kwargs
            assert r.headers["www-authenticate"].startswith("Basic")
            assert r.headers["content-type"] == "application/problem+json"
        r = await http.post(f"{url}/v1/track", json={**TRACK, "writeKey": 12})
        assert r.status_code == 401
        # With Basic auth the body's writeKey is not read, but still held to its type.
        r = await http.post(f"{url}/v1/track", auth=write_auth, json={**TRACK, "writeKey": 12})
        assert r.status_code == 400 and r.json()["errors"][0]["field"] == "writeKey"
        # analytics.js posts text/plain (a CORS "simple" request): still JSON to us.
        r = await http.post(f"{url}/v1/track", auth=write_auth, content=orjson.dumps(TRACK),
                            headers={"content-type": "text/plain"})
        assert r.status_code == 200 and r.json() == {"success": True}

        keys = f"{url}/v1/keys"
        # Write keys are public: they cannot read or manage anything. Admin keys cannot track.
        assert (await http.get(keys)).status_code == 401
        assert (await http.get(keys, auth=write_auth)).status_code == 401
        bearer_write = {"authorization": f"Bearer {write_auth[0]}"}
        assert (await http.get(keys, headers=bearer_write)).status_code == 401
        admin_key = admin_headers["Authorization"].split(" ", 1)[1]
        r = await http.post(f"{url}/v1/track", json=TRACK, auth=(admin_key, ""))
        assert r.status_code == 401

        r = await http.post(keys, headers=admin_headers, json={})
        assert r.status_code == 400 and r.json()["errors"][0]["field"] == "name"
        r = await http.post(keys, headers=admin_headers, json={"name": "storefront"})
        assert r.status_code == 201, r.text
        created = r.json()
        key, key_id = created["key"], created["id"]
        assert created["workspace_id"] == "default" and created["revoked_at"] is None
        r = await http.post(f"{url}/v1/track", json=TRACK, auth=(key, ""))
        assert r.status_code == 200

        listed = (await http.get(keys, headers=admin_headers)).json()["items"]
        mine = [k for k in listed if k["id"] == key_id]
        assert mine and mine[0]["name"] == "storefront"
        assert all("key" not in k and "key_hash" not in k for k in listed)
        assert key not in orjson.dumps(listed).decode()

        revoked = await http.post(f"{keys}/{key_id}/revoke", headers=admin_headers)
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]
        r = await http.post(f"{url}/v1/track", json={**TRACK, "writeKey": key})
        assert r.status_code == 401 and "revoked" in r.json()["detail"]
        again = await http.post(f"{keys}/{key_id}/revoke", headers=admin_headers)
        assert again.status_code == 200 and again.json() == revoked.json()  # idempotent
        assert (await http.post(f"{keys}/{'0' * 16}/revoke",
                                headers=admin_headers)).status_code == 404
        r = await http.post(f"{keys}/not-an-id/revoke", headers=admin_headers)
        assert r.status_code == 400 and r.json()["errors"][0]["field"].endswith("key_id")


async def test_browsers_may_post_from_any_origin(cfg: Settings,
                                                 write_auth: tuple[str, str]) -> None:
    async with serve_app(create_app(cfg)) as url, httpx.AsyncClient(timeout=10) as http:
        await wait_ready(http, url)
        r = await http.options(f"{url}/v1/batch", headers={
            "origin": "https://shop.example", "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type"})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "*"
        assert "POST" in r.headers["access-control-allow-methods"]
        r = await http.post(f"{url}/v1/page", auth=write_auth,
                            json={"anonymousId": "a", "name": "Home"},
                            headers={"origin": "https://shop.example"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"


def test_gzip_limit_is_checked_on_the_decompressed_size() -> None:
    # The bomb above is small on the wire: make sure the test case really is one.
    bomb = gzip.compress(b" " * 2_000_000)
    assert len(bomb) < 10_000 and len(zlib.decompress(bomb, 16 + zlib.MAX_WBITS)) > 500 * 1024
