"""Postgres cut under load (connections reset at a TCP proxy, then refused, for 3 s) while
messaging sends: the consumer pauses and resumes alone, and the reconciliation finds
nothing lost (no offset committed ahead of a durable state) and nothing sent twice.
Then Postgres stopped or slowed (2 s latency) with messaging SIGKILLed during the fault:
what it had committed is all the restart has, and still nothing is lost or sent twice.
(The broker cut under load for the whole stack, with ingest's 503 + Retry-After within
2 s: test_broker_cut.py.)"""

from __future__ import annotations

import asyncio
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from services.messaging.app import create_app
from shared.db import create_engine
from shared.kafka import create_producer
from shared.kafka.admin import ensure_topics
from shared.settings import Settings
from tests.reliability.harness import (
    ROUNDS,
    email_template,
    publish_emails,
    reconcile,
    recording_smtp,
    serve,
    service_env,
    settled,
)
from tests.support.net import free_port
from tests.support.processes import kill
from tests.support.proxy import TcpProxy
from tests.support.servers import serve_app

pytestmark = pytest.mark.integration
SENDS = 150
CONCURRENCY = 4
FAULT_S = 8.0


def _through(url: str, port: int) -> tuple[str, str, int]:
    parts = urlsplit(url)
    host, target = parts.hostname or "127.0.0.1", parts.port or 5432
    auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{port}")), host, target


@pytest.mark.timeout(240)
@pytest.mark.parametrize("round_", range(ROUNDS))
async def test_postgres_cut_mid_flow_loses_nothing_sends_nothing_twice(
        settings: Settings, admin_headers: dict[str, str], round_: int) -> None:
    proxy_port = free_port()
    proxied, host, target = _through(settings.database_url, proxy_port)
    proxy = TcpProxy(host, target, proxy_port)
    await proxy.restore()
    engine = create_engine(settings.database_url)  # the test's own view, not proxied
    with recording_smtp() as (smtp_url, smtp):
        own = settings.model_copy(update={"topic_prefix": f"pgcut-{uuid.uuid4().hex[:8]}.",
                                          "smtp_url": smtp_url, "database_url": proxied})
        await ensure_topics(own)
        app = create_app(own)
        app.state.messaging.settings.messaging_concurrency = 4
        producer = create_producer(own, client_id="test-pgcut")
        await producer.start()
        try:
            async with serve_app(app) as url, httpx.AsyncClient(headers=admin_headers,
                                                                timeout=10) as http:
                for _ in range(200):
                    if (await http.get(f"{url}/readyz")).status_code == 200:
                        break
                    await asyncio.sleep(0.1)
                r = await http.put(f"{url}/v1/templates/pgcut", json={
                    "channel": "email", "subject": "Once", "text": "only once"})
                assert r.status_code == 200, r.text
                smtp.delay = 0.02
                cmds = await publish_emails(producer, own, f"p-{uuid.uuid4().hex[:8]}", "pgcut",
                                            SENDS, "p")
                while sum(smtp.received.values()) < 20 + 10 * round_:
                    await asyncio.sleep(0.01)
                await proxy.cut()
                during = sum(smtp.received.values())
                ready = (await http.get(f"{url}/readyz")).status_code
                await asyncio.sleep(3)
                await proxy.restore()
                keys = [c.idempotency_key for c in cmds]
                rows = await settled(engine, keys, done=("sent",), within=90, show=_statuses)
            figures = reconcile(f"postgres-cut#{round_}", rows, set(keys), smtp.delivered)
            figures.bound = f"cut at {during} received, 3 s; readyz during cut {ready}"
            figures.show()
            assert not figures.lost and not figures.duplicated and not figures.unexpected
            assert figures.unknown == 0 and ready == 503
        finally:
            await producer.stop()
            await proxy.cut()
            await engine.dispose()


def _statuses(rows: dict[str, dict[str, object]]) -> dict[object, int]:
    out: dict[object, int] = {}
    for r in rows.values():
        out[r["status"]] = out.get(r["status"], 0) + 1
    return out


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fault", ["stopped", "slowed"])
async def test_postgres_fault_then_sigkill_no_offset_ahead_of_durable_state(
        settings: Settings, admin_headers: dict[str, str], fault: str) -> None:
    """`touchpoint serve messaging` reaches Postgres through the proxy; mid-flow Postgres is
    stopped (connections reset, then refused) or slowed (2 s added to every round trip) for
    `FAULT_S`, and the process is SIGKILLed while the fault lasts, so whatever offset it had
    committed is all a restart has. Postgres back, the restart must send every accepted
    command exactly once: an offset committed ahead of the message's durable row would
    show as lost. Only provider calls in flight at the kill may be `unknown`."""
    proxy_port = free_port()
    proxied, host, target = _through(settings.database_url, proxy_port)
    proxy = TcpProxy(host, target, proxy_port)
    await proxy.restore()
    engine = create_engine(settings.database_url)  # the test's own view, not proxied
    own = settings.model_copy(update={"topic_prefix": f"pgf-{uuid.uuid4().hex[:8]}."})
    await ensure_topics(own)
    producer = create_producer(own, client_id="test-pgfault")
    await producer.start()
    with recording_smtp() as (smtp_url, smtp):
        port = free_port()
        env = service_env(own, admin_headers, TOUCHPOINT_DATABASE_URL=proxied,
                          TOUCHPOINT_SMTP_URL=smtp_url,
                          TOUCHPOINT_MESSAGING_CONCURRENCY=str(CONCURRENCY))
        url = f"http://127.0.0.1:{port}"
        proc = serve("messaging", env, port)
        try:
            await email_template(url, admin_headers, "pgfault")
            smtp.delay = 0.02
            cmds = await publish_emails(producer, own, f"f-{uuid.uuid4().hex[:8]}", "pgfault",
                                        SENDS, "f")
            deadline = asyncio.get_running_loop().time() + 60
            while sum(smtp.received.values()) < 20:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.01)
            at_fault = sum(smtp.received.values())
            if fault == "stopped":
                await proxy.cut()
            else:
                proxy.latency = 2.0
            await asyncio.sleep(FAULT_S)
            during = sum(smtp.received.values()) - at_fault
            kill(proc)
            await asyncio.to_thread(proc.wait, 20)
            if fault == "stopped":
                await proxy.restore()
            proxy.latency = 0.0
            restarted = time.monotonic()
            proc = serve("messaging", env, port)
            keys = [c.idempotency_key for c in cmds]
            rows = await settled(engine, keys, done=("sent", "unknown"), within=120,
                                 show=_statuses)
            figures = reconcile(f"postgres-{fault}-then-kill", rows, set(keys), smtp.delivered)
            figures.bound = (f"{fault} {FAULT_S:.0f}s at {at_fault} received, {during} more "
                             f"during it, SIGKILL before restoring; all settled "
                             f"{time.monotonic() - restarted:.1f}s after the restart; "
                             f"unknown bound={2 * CONCURRENCY}")
            figures.show()
            assert not figures.lost and not figures.duplicated and not figures.unexpected
            assert figures.unknown <= 2 * CONCURRENCY
        finally:
            kill(proc)
            await asyncio.to_thread(proc.wait, 20)
            await producer.stop()
            await proxy.cut()
            await engine.dispose()
