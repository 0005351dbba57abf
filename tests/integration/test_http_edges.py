"""HTTP promises every service keeps: problem+json for bad input, 401 without keys,
413 over the limits, 503 + Retry-After (fast) when the broker is away."""

from __future__ import annotations

import gzip
import time

import httpx
import orjson
import pytest

from services.ingest.app import create_app as ingest_app
from services.journey.app import create_app as journey_app
from shared.settings import Settings
from tests.support.net import free_port
from tests.support.servers import serve_app

pytestmark = pytest.mark.integration


async def _ready(http: httpx.AsyncClient, url: str) -> None:
    for _ in range(200):
        if (await http.get(f"{url}/readyz")).status_code == 200:
            return
        time.sleep(0.05)
    raise TimeoutError(url)


async def test_ingest_bad_input_is_4xx_problem_json(settings: Settings, topics: list[str],
                                                    write_auth: tuple[str, str]) -> None:
    async with serve_app(ingest_app(settings)) as url, httpx.AsyncClient(timeout=10) as http:
        await _ready(http, url)
        cases = [
            (dict(content=b'{"userId": "u", "event": ', auth=write_auth), 400, "body"),
            (dict(json={"event": "X"}, auth=write_auth), 400, "userId"),
            (dict(json={"userId": "u"}, auth=write_auth), 400, "event"),
            (dict(json={"userId": ["not", "a", "string"], "event": "X"}, auth=write_auth), 400,
             "userId"),
            (dict(json={"userId": "u", "event": "X"}), 401, None),
            (dict(json={"userId": "u", "event": "X"}, auth=("tp_write_nope", "")), 401, None),
            (dict(json={"userId": "u", "event": "X", "properties": {"blob": "x" * 40_000}},
                  auth=write_auth), 413, None),
        ]
        for kwargs, status, field in cases:
            r = await http.post(f"{url}/v1/track", **kwargs)
            assert r.status_code == status, (kwargs.get("json"), r.text)
            assert r.headers["content-type"] == "application/problem+json"
            body = r.json()
            assert body["status"] == status and body["title"]
            if field:
                assert field in [e["field"] for e in body["errors"]], body

        # writeKey in the body works like Basic auth; gzip bodies are accepted.
        payload = {"userId": "u", "event": "X", "writeKey": write_auth[0]}
        r = await http.post(f"{url}/v1/track", content=gzip.compress(orjson.dumps(payload)),
                            headers={"content-encoding": "gzip",
                                     "content-type": "application/json"})
        assert r.status_code == 200 and r.json() == {"success": True}

        # A batch with some bad calls accepts the good ones and says which were refused.
        r = await http.post(f"{url}/v1/batch", auth=write_auth, json={"batch": [
            {"type": "track", "userId": "u", "event": "A"},
            {"type": "track", "userId": "u"},
            {"type": "nope", "userId": "u"}]})
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 1
        assert [x["index"] for x in r.json()["rejected"]] == [1, 2]

        r = await http.post(f"{url}/v1/batch", auth=write_auth,
                            content=b'{"batch": [' + b'{"a": "' + b"x" * 600_000 + b'"}]}')
        assert r.status_code == 413


async def test_management_api_needs_admin_key_and_validates(settings: Settings,
                                                            admin_headers: dict[str, str]) -> None:
    async with serve_app(journey_app(settings)) as url, httpx.AsyncClient(timeout=10) as http:
        await _ready(http, url)
        assert (await http.get(f"{url}/v1/journeys")).status_code == 401
        r = await http.get(f"{url}/v1/journeys", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
        r = await http.post(f"{url}/v1/journeys/validate", headers=admin_headers,
                            json={"key": "x", "name": "x", "stages": [
                                {"key": "s", "enter": {"event": "E"},
                                 "steps": [{"id": "a", "wait": "soon"}]}]})
        assert r.status_code == 400
        assert r.json()["errors"][0]["field"] == "stages.0.steps.0.wait"
        r = await http.get(f"{url}/v1/journeys/unknown", headers=admin_headers)
        assert r.status_code == 404 and r.json()["status"] == 404
        assert (await http.get(f"{url}/openapi.json")).status_code == 200
        metrics = await http.get(f"{url}/metrics")
        assert "touchpoint_http_requests_total" in metrics.text


async def test_broker_down_answers_503_fast(settings: Settings,
                                            write_auth: tuple[str, str]) -> None:
    dead = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    async with serve_app(ingest_app(dead)) as url, httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(f"{url}/healthz")).status_code == 200
        ready = await http.get(f"{url}/readyz")
        assert ready.status_code == 503 and ready.json()["checks"] == {"postgres": True,
                                                                      "kafka": False}
        started = time.perf_counter()
        r = await http.post(f"{url}/v1/track", auth=write_auth, json={"userId": "u", "event": "X"})
        assert time.perf_counter() - started < 2.5
        assert r.status_code == 503 and r.headers["retry-after"]
        assert r.headers["content-type"] == "application/problem+json"
