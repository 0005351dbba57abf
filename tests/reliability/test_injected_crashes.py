"""Crashes injected deliberately between a database commit and the produce after it, and the
reverse, in running services (`shared/faults.py`, TOUCHPOINT_FAULT_INJECT).

Profile, journey and messaging run as `touchpoint serve` subprocesses on topics of their own;
customers flow through the whole chain: an identify and a track event each -> profile ->
journey (entry, send) -> messaging -> the recording SMTP server. Each service is given one
crash point, which ends it (exit status FAULT_EXIT) on its N-th pass; it is restarted without
one, and the harness reconciles every customer with messaging's rows and the SMTP sink.

Pass: every service crashed at its point once; 0 lost, 0 delivered twice, 0 unexpected;
messages left `unknown` (a messaging crash during provider calls) at most the SMTP pool.
Which point which service gets turns per round: `make test` runs rotation 0 (each point
once), `make soak` all three, so that every point meets every service.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from services.journey.tables import api_keys as journey_keys
from services.messaging.providers.email import Settings as SmtpSettings
from services.messaging.tables import api_keys as messaging_keys
from services.messaging.tables import messages
from shared.auth import hash_key, new_key
from shared.contracts.events import Event, EventType
from shared.db import create_engine
from shared.faults import FAULT_EXIT
from shared.kafka import create_producer
from shared.kafka.admin import ensure_topics
from shared.kafka.codec import encode, headers_for
from shared.settings import Settings
from tests.reliability.harness import ROUNDS, Figures, kill, ready, recording_smtp, serve
from tests.support.net import free_port

pytestmark = pytest.mark.integration
CUSTOMERS = 40
POOL = SmtpSettings.model_fields["pool_size"].default
SERVICES = ("profile", "journey", "messaging")
ROTATIONS = [  # service -> point:n
    {"profile": "after_commit_before_produce:2", "journey": "after_produce_before_commit:2",
     "messaging": "before_offset_commit:2"},
    {"profile": "before_offset_commit:2", "journey": "after_commit_before_produce:2",
     "messaging": "after_produce_before_commit:3"},
    {"profile": "after_produce_before_commit:2", "journey": "before_offset_commit:2",
     "messaging": "after_commit_before_produce:3"},
]


def _event(ws: str, run: str, n: int, kind: EventType) -> Event:
    now = datetime.now(UTC)
    fields: dict[str, Any] = {"id": f"inj-{run}-{n}-{kind.value}", "workspace_id": ws,
                              "type": kind, "user_id": f"u-{run}-{n}", "timestamp": now,
                              "received_at": now}
    if kind is EventType.identify:
        fields["traits"] = {"email": f"c{n}-{run}@example.com"}
    else:
        fields["event"] = f"Inj Joined {run}"
    return Event.model_validate(fields)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("round_", range(ROUNDS))
async def test_crash_between_commit_and_produce_loses_nothing_sends_nothing_twice(
        settings: Settings, admin_headers: dict[str, str], round_: int) -> None:
    plan = ROTATIONS[round_ % len(ROTATIONS)]
    run = uuid.uuid4().hex[:8]
    own = settings.model_copy(update={"topic_prefix": f"inj-{run}."})
    await ensure_topics(own)
    engine = create_engine(own.database_url)
    ws, key = f"ws-inj-{run}", new_key("admin")
    async with engine.begin() as conn:
        for table in (journey_keys, messaging_keys):
            await conn.execute(insert(table).values(key_hash=hash_key(key), kind="admin",
                                                    workspace_id=ws, name="reliability"))
    producer = create_producer(own, client_id="test-inject")
    await producer.start()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    with recording_smtp() as (smtp_url, smtp):
        smtp.delay = 0.01  # provider calls overlap: some are in flight at a messaging crash
        base = {**os.environ, "TOUCHPOINT_ENV": "test", "TOUCHPOINT_DATABASE_URL":
                own.database_url, "TOUCHPOINT_KAFKA_BOOTSTRAP": own.kafka_bootstrap,
                "TOUCHPOINT_TOPIC_PREFIX": own.topic_prefix, "TOUCHPOINT_SMTP_URL": smtp_url,
                "TOUCHPOINT_BOOTSTRAP_ADMIN_KEY": admin_headers["Authorization"][7:],
                "TOUCHPOINT_CONSUMER_SESSION_TIMEOUT_MS": "6000",
                "TOUCHPOINT_CONSUMER_FETCH_MAX_WAIT_MS": "10"}
        base.pop("TOUCHPOINT_FAULT_INJECT", None)
        ports = {s: free_port() for s in SERVICES}
        urls = {s: f"http://127.0.0.1:{p}" for s, p in ports.items()}
        for s in SERVICES:
            procs[s] = serve(s, {**base, "TOUCHPOINT_FAULT_INJECT": plan[s]}, ports[s])
        crashed: dict[str, float] = {}
        try:
            for s in SERVICES:
                await ready(urls[s])
            async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http:
                r = await http.put(f"{urls['messaging']}/v1/templates/inj-{run}", json={
                    "channel": "email", "subject": "Once", "text": "only once"})
                assert r.status_code == 200, r.text
                doc = {"key": f"inj-{run}", "name": "Injected crashes", "stages": [
                    {"key": "joined", "enter": {"event": f"Inj Joined {run}"},
                     "steps": [{"id": "hello", "send": {"channel": "email",
                                                        "template": f"inj-{run}"}}]}]}
                r = await http.post(f"{urls['journey']}/v1/journeys", json=doc)
                assert r.status_code == 201, r.text
                r = await http.post(f"{urls['journey']}/v1/journeys/{doc['key']}/publish")
                assert r.status_code == 200, r.text
            started = time.monotonic()

            async def feed() -> None:  # ~20 customers/s, so the crashes fall mid-flow
                for n in range(CUSTOMERS):
                    sent = [await producer.send(
                        own.topic("events"), encode(e), key=f"{ws}:u-{run}-{n}".encode(),
                        headers=headers_for(e, "events"))
                        for e in (_event(ws, run, n, EventType.identify),
                                  _event(ws, run, n, EventType.track))]
                    await asyncio.gather(*sent)
                    await asyncio.sleep(0.05)

            feeding = asyncio.create_task(feed())
            emails = {f"c{n}-{run}@example.com" for n in range(CUSTOMERS)}
            deadline = asyncio.get_running_loop().time() + 150
            rows: list[dict[str, Any]] = []
            while True:
                for s, proc in procs.items():
                    if proc.poll() is None:
                        continue
                    assert s not in crashed and proc.returncode == FAULT_EXIT, \
                        (s, proc.returncode, "exited other than at its crash point")
                    crashed[s] = time.monotonic() - started
                    procs[s] = serve(s, base, ports[s])  # restarted without a crash point
                async with engine.connect() as conn:
                    rows = [dict(r) for r in (await conn.execute(
                        select(messages.c.id, messages.c.status, messages.c.recipient)
                        .where(messages.c.workspace_id == ws))).mappings()]
                final = {r["recipient"] for r in rows if r["status"] in ("sent", "unknown")}
                if feeding.done() and len(crashed) == len(SERVICES) and final >= emails:
                    break
                if asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.1)
            await feeding
            await asyncio.sleep(2)  # a late second delivery would show now
            figures = _reconcile(f"injected#{round_}", emails, rows, smtp.delivered)
            figures.bound = (f"bound={POOL} crashes: " + ", ".join(
                f"{s} {plan[s]} at {crashed[s]:.1f}s" if s in crashed else f"{s} {plan[s]} NOT HIT"
                for s in SERVICES) + f"; all final {time.monotonic() - started:.1f}s after start")
            figures.show()
            assert set(crashed) == set(SERVICES), "a crash point was never reached"
            assert not figures.lost and not figures.duplicated and not figures.unexpected
            assert figures.unknown <= POOL
        finally:
            for proc in procs.values():
                kill(proc)
            for proc in procs.values():
                await asyncio.to_thread(proc.wait, 20)
            await producer.stop()
            await engine.dispose()


def _reconcile(name: str, emails: set[str], rows: list[dict[str, Any]],
               delivered: Any) -> Figures:
    """Per customer (its address): lost when no message of it was delivered and none is
    `unknown`; duplicated when it got more than one delivery or more than one message."""
    f = Figures(name, len(emails))
    mine: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        mine.setdefault(r["recipient"], []).append(r)
    for email in sorted(emails):
        got = mine.get(email, [])
        hits = sum(delivered[r["id"]] for r in got)
        if hits == 0 and not any(r["status"] == "unknown" for r in got):
            f.lost.append(email)
        elif hits > 1 or len(got) > 1:
            f.duplicated.append(email)
        f.unknown += sum(r["status"] == "unknown" for r in got)
    owned = {r["id"] for r in rows}
    f.unexpected = [mid for mid in delivered if mid not in owned]
    return f
