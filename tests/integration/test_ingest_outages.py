"""Broker or Postgres away: ingest answers 503 + Retry-After within about two seconds, then
recovers by itself; an event retried across the outage lands exactly once. Shutdown lets
in-flight requests finish."""

from __future__ import annotations

import asyncio
import base64
import time
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
import uvicorn

from services.ingest.app import create_app
from services.ingest.publisher import Outgoing, Sending, enqueue
from shared.kafka import create_producer
from shared.kafka.admin import ensure_topics
from shared.settings import Settings
from tests.support.broker import broker_behind
from tests.support.net import free_port
from tests.support.proxy import TcpProxy
from tests.support.ready import wait_ready
from tests.support.servers import serve_app
from tests.support.topics import read_topic, with_own_topics

pytestmark = pytest.mark.integration


@pytest.fixture
async def cfg(settings: Settings, unique: str) -> Settings:
    """The session's settings with this test's own topics."""
    return await with_own_topics(settings, f"ingest-{unique}")


async def post_until_200(http: httpx.AsyncClient, url: str, auth: tuple[str, str],
                         payload: dict[str, object], timeout: float = 60.0) -> int:
    """Retry like an SDK does; returns how many 503s it saw before the 200."""
    refused = 0
    deadline = time.monotonic() + timeout
    while True:
        r = await http.post(url, auth=auth, json=payload)
        if r.status_code == 200:
            return refused
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"]
        refused += 1
        assert time.monotonic() < deadline, "ingest did not recover"
        await asyncio.sleep(0.2)


async def test_broker_outage_is_503_then_recovers_and_nothing_doubles(
        settings: Settings, write_auth: tuple[str, str], unique: str) -> None:
    proxy_port = free_port()
    cfg = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{proxy_port}"})
    event = {"userId": f"u-{unique}", "event": "Paid", "messageId": f"outage-{unique}"}
    with broker_behind(proxy_port) as broker_port:
        proxy = TcpProxy("127.0.0.1", broker_port, proxy_port)
        await proxy.restore()
        try:
            await ensure_topics(cfg)
            async with serve_app(create_app(cfg)) as url, httpx.AsyncClient(timeout=10) as http:
                await wait_ready(http, url)
                r = await http.post(f"{url}/v1/track", auth=write_auth,
                                    json={**event, "messageId": f"before-{unique}"})
                assert r.status_code == 200
                await proxy.cut()

                for _ in range(2):
                    started = time.perf_counter()
                    r = await http.post(f"{url}/v1/track", auth=write_auth, json=event)
                    assert time.perf_counter() - started < 2.5
                    assert r.status_code == 503 and r.headers["retry-after"] == "2"
                    assert r.headers["content-type"] == "application/problem+json"
                ready = await http.get(f"{url}/readyz")
                assert ready.status_code == 503 and ready.json()["checks"]["kafka"] is False

                await proxy.restore()
                await post_until_200(http, f"{url}/v1/track", write_auth, event)
                # An SDK that never saw the 200 retries once more: a duplicate by now.
                r = await http.post(f"{url}/v1/batch", auth=write_auth,
                                    json={"batch": [{**event, "type": "track"}]})
                assert r.json() == {"success": True, "accepted": 1, "duplicates": 1}
                await wait_ready(http, url)
            # The app has stopped: whatever its producer still held is flushed or dropped.
            records = await read_topic(cfg.kafka_bootstrap, cfg.topic("events"),
                                       lambda rs: len(rs) >= 2)
            ids = [orjson.loads(x.value)["id"] for x in records]
            assert sorted(ids) == sorted([f"before-{unique}", event["messageId"]])
        finally:
            await proxy.cut()


async def test_postgres_outage_is_503_then_recovers(cfg: Settings,
                                                    write_auth: tuple[str, str],
                                                    unique: str) -> None:
    db = urlsplit(cfg.database_url)
    proxy = TcpProxy(db.hostname or "127.0.0.1", db.port or 5432, free_port())
    await proxy.restore()
    proxied = cfg.model_copy(update={"database_url": cfg.database_url.replace(
        f"{db.hostname}:{db.port}", f"127.0.0.1:{proxy.port}")})
    event = {"userId": f"u-{unique}", "event": "Paid", "messageId": f"pg-{unique}"}
    try:
        async with serve_app(create_app(proxied)) as url, httpx.AsyncClient(timeout=10) as http:
            await wait_ready(http, url)
            r = await http.post(f"{url}/v1/track", auth=write_auth,
                                json={**event, "messageId": f"pg-before-{unique}"})
            assert r.status_code == 200  # the write key is now in the key ring's cache
            await proxy.cut()
            for _ in range(2):  # the first finds dead pooled connections, the next a refusal
                started = time.perf_counter()
                r = await http.post(f"{url}/v1/track", auth=write_auth, json=event)
                assert time.perf_counter() - started < 2.5
                assert r.status_code == 503 and r.headers["retry-after"]
                assert r.headers["content-type"] == "application/problem+json"
            await proxy.restore()
            await post_until_200(http, f"{url}/v1/track", write_auth, event, timeout=20)
        records = await read_topic(cfg.kafka_bootstrap, cfg.topic("events"),
                                   lambda rs: any(orjson.loads(x.value)["id"] == event[
                                       "messageId"] for x in rs))
        assert [orjson.loads(x.value)["id"] for x in records].count(event["messageId"]) == 1
    finally:
        await proxy.cut()


async def test_shutdown_drains_in_flight_requests(cfg: Settings,
                                                  write_auth: tuple[str, str],
                                                  unique: str) -> None:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(cfg), host="127.0.0.1", port=port,
                                           lifespan="on", log_level="warning"))
    serving = asyncio.create_task(server.serve())
    async with httpx.AsyncClient(timeout=10) as http:
        while not server.started:
            await asyncio.sleep(0.02)
        await wait_ready(http, f"http://127.0.0.1:{port}")
    body = orjson.dumps({"userId": f"u-{unique}", "event": "Late", "messageId": f"late-{unique}"})
    auth = base64.b64encode(f"{write_auth[0]}:".encode()).decode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                 + body[:10])  # the request has begun; half its body is still to come
    await writer.drain()
    await asyncio.sleep(0.3)
    server.should_exit = True  # what SIGTERM does
    await asyncio.sleep(0.5)
    assert not serving.done(), "the server stopped with a request in flight"
    writer.write(body[10:])
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200"), head
    writer.close()
    await asyncio.wait_for(serving, 20)
    records = await read_topic(cfg.kafka_bootstrap, cfg.topic("events"),
                               lambda rs: any(dict(r.headers)["message-id"] == f"late-{unique}"
                                              .encode() for r in rs))
    assert records


async def test_a_requests_events_for_one_customer_are_delivered_together_in_order(
        settings: Settings, unique: str) -> None:
    """While the broker is away the producer's batch for a partition fills up; appended
    one by one, a request's identify could close that batch and its track open the next,
    and the two batches expire apart (the later one delivered, the earlier one failed: the
    retry would put the identify behind the track). A request's events for one partition
    are one batch of their own: one future, delivered or failed together, in order."""
    proxy_port = free_port()
    cfg = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{proxy_port}",
                                      "topic_prefix": f"order-{unique}."})
    with broker_behind(proxy_port) as broker_port:
        proxy = TcpProxy("127.0.0.1", broker_port, proxy_port)
        await proxy.restore()
        await ensure_topics(cfg)
        producer = create_producer(cfg, client_id="test-order")
        await producer.start()
        topic = cfg.topic("events")
        try:
            await producer.partitions_for(topic)
            await proxy.cut()

            def event(n: int) -> Outgoing:
                return Outgoing.of({"id": f"{unique}-{n}", "workspace_id": "w", "type": "track",
                                    "user_id": "same", "event": "x" * 300})

            filler = Sending()  # single-event requests: they share the producer's batches
            for n in range(60):
                await enqueue(producer, topic, [event(n)], filler)
            pair = Sending()  # its own batch waits behind the partition's queued ones
            enqueued = asyncio.create_task(enqueue(producer, topic, [event(60), event(61)],
                                                   pair))
            await asyncio.sleep(0.5)
            await proxy.restore()
            await asyncio.wait_for(enqueued, 30)
            assert [ids for _, ids in pair.parts] == [[f"{unique}-60", f"{unique}-61"]]
            await asyncio.wait_for(asyncio.gather(*filler.futures, *pair.futures), 30)
            records = await read_topic(cfg.kafka_bootstrap, topic, lambda rs: len(rs) >= 62)
            assert [orjson.loads(r.value)["id"] for r in records] == [
                f"{unique}-{n}" for n in range(62)]
        finally:
            await producer.stop()
            await proxy.cut()
