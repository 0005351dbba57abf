"""The broker unreachable under load, for the whole stack: ingest, profile, journey and
messaging run as `touchpoint serve` processes against a Tansu broker that every client
reaches through a TCP proxy (its advertised address is the proxy's, so data connections
are cut too, not only bootstrap). Customers keep arriving (identify + track, each retried
like an SDK until a 200) before, during and after a cut of `CUT_S` seconds; the journey
emails each one on entry.

Pass: during the cut ingest answers only 503 with Retry-After, each within 2 s; every
service resumes alone (its `/readyz` 200 again, nothing restarted); every customer ingest
answered 200 for gets exactly one email (0 lost, 0 duplicated), and every 200'd event is on
the events topic (never a 200 for an event not handed over). `make test` cuts 15 s;
`make soak` 30 s (TOUCHPOINT_SOAK_CUT_S overrides)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert

from services.ingest.tables import api_keys as ingest_keys
from services.journey.tables import api_keys as journey_keys
from services.messaging.tables import api_keys as messaging_keys
from shared.auth import hash_key, new_key
from shared.db import create_engine
from shared.kafka.admin import ensure_topics
from shared.settings import Settings
from tests.reliability.harness import SOAK, Figures, kill, ready, recording_smtp, serve
from tests.support.broker import broker_behind
from tests.support.net import free_port
from tests.support.proxy import TcpProxy
from tests.support.topics import read_topic

pytestmark = pytest.mark.integration
CUT_S = float(os.environ.get("TOUCHPOINT_SOAK_CUT_S", "30")) if SOAK else 15.0
RATE = 4  # new customers a second
BEFORE_S, AFTER_S = 4.0, 4.0
SERVICES = ("ingest", "profile", "journey", "messaging")


@pytest.mark.timeout(420)
async def test_broker_cut_under_load_every_service_resumes_nothing_lost_or_twice(
        settings: Settings, admin_headers: dict[str, str]) -> None:
    proxy_port = free_port()
    own = settings.model_copy(update={"topic_prefix": f"bcut-{uuid.uuid4().hex[:8]}.",
                                      "kafka_bootstrap": f"127.0.0.1:{proxy_port}"})
    ws, admin, write = f"ws-{uuid.uuid4().hex[:10]}", new_key("admin"), new_key("write")
    engine = create_engine(own.database_url)
    async with engine.begin() as conn:
        await conn.execute(insert(ingest_keys).values(key_hash=hash_key(write), kind="write",
                                                      workspace_id=ws, name="reliability"))
        for table in (journey_keys, messaging_keys):
            await conn.execute(insert(table).values(key_hash=hash_key(admin), kind="admin",
                                                    workspace_id=ws, name="reliability"))
    await engine.dispose()
    procs: dict[str, Any] = {}
    with broker_behind(proxy_port) as broker_port, recording_smtp() as (smtp_url, smtp):
        proxy = TcpProxy("127.0.0.1", broker_port, proxy_port)
        await proxy.restore()
        await ensure_topics(own)
        env = {**os.environ, "TOUCHPOINT_ENV": "test", "TOUCHPOINT_DATABASE_URL":
               own.database_url, "TOUCHPOINT_KAFKA_BOOTSTRAP": own.kafka_bootstrap,
               "TOUCHPOINT_TOPIC_PREFIX": own.topic_prefix, "TOUCHPOINT_SMTP_URL": smtp_url,
               "TOUCHPOINT_BOOTSTRAP_ADMIN_KEY": admin_headers["Authorization"][7:],
               "TOUCHPOINT_CONSUMER_FETCH_MAX_WAIT_MS": "10"}
        urls = {name: f"http://127.0.0.1:{free_port()}" for name in SERVICES}
        try:
            for name, url in urls.items():
                procs[name] = serve(name, env, int(url.rsplit(":", 1)[1]))
            for url in urls.values():
                await ready(url)
            async with httpx.AsyncClient(headers={"Authorization": f"Bearer {admin}"},
                                         timeout=10) as http:
                r = await http.put(f"{urls['messaging']}/v1/templates/cut", json={
                    "channel": "email", "subject": "Once", "text": "only once"})
                assert r.status_code == 200, r.text
                r = await http.post(f"{urls['journey']}/v1/journeys", json={
                    "key": "rel-cut", "name": "Broker cut", "stages": [
                        {"key": "in", "enter": {"event": "Rel Cut"},
                         "steps": [{"id": "hi", "send": {"channel": "email",
                                                         "template": "cut"}}]}]})
                assert r.status_code == 201, r.text
                r = await http.post(f"{urls['journey']}/v1/journeys/rel-cut/publish")
                assert r.status_code == 200, r.text
            run = uuid.uuid4().hex[:6]
            accepted: dict[str, float] = {}  # customer -> when ingest answered 200
            refusals: list[tuple[float, float, str | None]] = []  # (at, seconds, Retry-After)
            wrong: list[str] = []
            cut_window: list[float] = []

            async def customer(http: httpx.AsyncClient, n: int) -> None:
                user = f"c{run}-{n}"
                batch = {"batch": [
                    {"type": "identify", "userId": user, "messageId": f"{user}-i",
                     "traits": {"email": f"{user}@example.com"}},
                    {"type": "track", "userId": user, "event": "Rel Cut",
                     "messageId": f"{user}-t"}]}
                while True:
                    started = time.monotonic()
                    try:
                        r = await http.post(f"{urls['ingest']}/v1/batch", json=batch)
                    except httpx.TransportError as exc:  # never expected: ingest stays up
                        wrong.append(f"{user}: {type(exc).__name__}")
                        return
                    took = time.monotonic() - started
                    if r.status_code == 200:
                        accepted[user] = time.monotonic()
                        return
                    if r.status_code != 503:
                        wrong.append(f"{user}: {r.status_code} {r.text[:200]}")
                        return
                    refusals.append((started, took, r.headers.get("retry-after")))
                    await asyncio.sleep(1.0)  # an SDK honours Retry-After more or less

            # A connection per waiting customer: httpx's default pool (100) would queue
            # requests in the client and count that wait as ingest's.
            async with httpx.AsyncClient(auth=(write, ""), timeout=30, limits=httpx.Limits(
                    max_connections=None, max_keepalive_connections=None)) as http:
                tasks: list[asyncio.Task[None]] = []

                async def feed(seconds: float) -> None:
                    end = time.monotonic() + seconds
                    while time.monotonic() < end:
                        tasks.append(asyncio.create_task(customer(http, len(tasks))))
                        await asyncio.sleep(1 / RATE)

                await feed(BEFORE_S)
                cut_window.append(time.monotonic())
                await proxy.cut()
                await feed(CUT_S)
                await proxy.restore()
                cut_window.append(time.monotonic())
                resumed: dict[str, float] = {}
                feeding_after = asyncio.create_task(feed(AFTER_S))
                deadline = time.monotonic() + 120
                async with httpx.AsyncClient(timeout=5) as probe:
                    while len(resumed) < len(SERVICES):
                        for name, url in urls.items():
                            if name not in resumed and (await probe.get(
                                    f"{url}/readyz")).status_code == 200:
                                resumed[name] = time.monotonic() - cut_window[1]
                        assert time.monotonic() < deadline, resumed
                        await asyncio.sleep(0.2)
                await feeding_after
                await asyncio.wait_for(asyncio.gather(*tasks), 120)
            assert not wrong, wrong[:5]
            customers = set(accepted)
            addresses = {f"{u}@example.com": u for u in customers}
            events = await read_topic(own.kafka_bootstrap, own.topic("events"),
                                      lambda rs: len({orjson.loads(r.value)["id"] for r in rs})
                                      >= 2 * len(customers), timeout=60)
            on_topic = {orjson.loads(r.value)["id"] for r in events}
            first: dict[str, int] = {}  # event id -> position of its first copy
            for r in sorted(events, key=lambda r: (r.partition, r.offset)):
                first.setdefault(orjson.loads(r.value)["id"], r.offset)
            # Same key, same partition: a track ahead of its customer's identify is a
            # customer the journey meets without an address.
            reordered = [u for u in customers if first.get(f"{u}-t", -1) < first.get(
                f"{u}-i", -1)]
            deadline = time.monotonic() + 120
            while sum(1 for a in addresses if smtp.attempts[a]) < len(addresses):
                if time.monotonic() > deadline:
                    missing = [u for a, u in addresses.items() if not smtp.attempts[a]]
                    raise AssertionError((f"reordered on the events topic: {reordered}",
                                          await _trace(own.database_url, ws, missing[:3])))
                await asyncio.sleep(0.2)
            last_email = time.monotonic() - cut_window[1]
            await asyncio.sleep(3)  # a late second email would show now
            dead = [p for name, p in procs.items() if p.poll() is not None]

            during = [(at, took, ra) for at, took, ra in refusals
                      if cut_window[0] <= at <= cut_window[1]]
            f = Figures(f"broker-cut-{CUT_S:.0f}s", len(customers))
            f.lost = [u for u in customers if not smtp.attempts[f"{u}@example.com"]]
            f.lost += [u for u in customers if not {f"{u}-i", f"{u}-t"} <= on_topic]
            f.duplicated = [u for u in customers if smtp.attempts[f"{u}@example.com"] > 1]
            f.unexpected = [a for a in smtp.attempts if a not in addresses]
            f.bound = (f"identify/track out of order {len(reordered)}; 503s during the cut "
                       f"{len(during)}, slowest "
                       f"{max((t for _, t, _ in during), default=0):.2f}s; readyz again after "
                       f"the restore: " + ", ".join(f"{n} {s:.1f}s" for n, s in
                                                     sorted(resumed.items(), key=lambda x: x[1]))
                       + f"; last 200 {max(accepted.values()) - cut_window[1]:.1f}s and last "
                       f"email {last_email:.1f}s after the restore")
            f.show()
            assert not dead, "a service exited"
            assert not f.lost and not f.duplicated and not f.unexpected and not reordered
            assert during, "ingest should have refused during the cut"
            assert all(took < 2.0 and ra for _, took, ra in during), \
                [(t, ra) for _, t, ra in during if t >= 2.0 or not ra][:5]
        finally:
            for p in procs.values():
                kill(p)
                await asyncio.to_thread(p.wait, 20)
            await proxy.cut()


async def _trace(database_url: str, ws: str, users: list[str]) -> str:
    """Where customers stopped on their way (for a failure's message)."""
    engine = create_engine(database_url)
    out = []
    try:
        async with engine.connect() as conn:
            for user in users:
                pid = (await conn.execute(text(
                    "SELECT id FROM profile.profiles WHERE workspace_id = :ws AND user_id = :u"),
                    {"ws": ws, "u": user})).scalar()
                seen = (await conn.execute(text(
                    "SELECT type, name FROM profile.events WHERE workspace_id = :ws AND "
                    "profile_id = :p"), {"ws": ws, "p": pid})).all()
                decided = (await conn.execute(text(
                    "SELECT kind, outcome, reason FROM journey.decisions WHERE workspace_id = "
                    ":ws AND profile_id = :p ORDER BY id"), {"ws": ws, "p": pid})).all()
                sent = (await conn.execute(text(
                    "SELECT status, error FROM messaging.messages WHERE workspace_id = :ws "
                    "AND profile_id = :p"), {"ws": ws, "p": pid})).all()
                out.append(f"{user}: profile {pid} events {seen} journey {decided} "
                           f"messages {sent}")
    finally:
        await engine.dispose()
    return "; ".join(out)
