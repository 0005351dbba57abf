"""Consumers scaled 1 -> 3 -> 1 under load (`touchpoint serve` replicas in one consumer
group, each a static member; the two extra replicas stop with SIGTERM), for messaging
(300 emails: reconciled at the SMTP sink), profile (300 events: history rows and
`event_count`) and journey (60 customers through an entry, a 1 s durable timer and a send:
one idempotency key each). Nothing lost, nothing twice. Soak only (`make soak`): about a
minute each."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from services.journey.tables import api_keys as journey_keys
from services.messaging.tables import messages
from services.profile.tables import events, profiles
from shared.auth import hash_key, new_key
from shared.contracts.envelope import message_key
from shared.contracts.events import Event, EventType
from shared.contracts.profile import ProfileEvent, ProfileSnapshot
from shared.contracts.send import Channel, Recipient, SendCommand
from shared.db import create_engine
from shared.kafka import create_producer, publish
from shared.kafka.admin import ensure_topics
from shared.kafka.codec import encode
from shared.settings import Settings
from tests.reliability.harness import (
    SOAK,
    Figures,
    kill,
    ready,
    reconcile,
    recording_smtp,
    serve,
)
from tests.support.net import free_port

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not SOAK, reason="soak only (TOUCHPOINT_SOAK=1, make soak)")]
SENDS = 300


@pytest.mark.timeout(300)
async def test_scale_messaging_1_3_1_under_load(settings: Settings,
                                                admin_headers: dict[str, str]) -> None:
    own = settings.model_copy(update={"topic_prefix": f"scale-{uuid.uuid4().hex[:8]}."})
    await ensure_topics(own)
    engine = create_engine(own.database_url)
    producer = create_producer(own, client_id="test-scale")
    await producer.start()
    with recording_smtp() as (smtp_url, smtp):
        env = {**os.environ, "TOUCHPOINT_ENV": "test", "TOUCHPOINT_DATABASE_URL":
               own.database_url, "TOUCHPOINT_KAFKA_BOOTSTRAP": own.kafka_bootstrap,
               "TOUCHPOINT_TOPIC_PREFIX": own.topic_prefix, "TOUCHPOINT_SMTP_URL": smtp_url,
               "TOUCHPOINT_BOOTSTRAP_ADMIN_KEY": admin_headers["Authorization"][7:],
               "TOUCHPOINT_CONSUMER_FETCH_MAX_WAIT_MS": "10"}
        ports = [free_port() for _ in range(3)]
        procs = [serve("messaging", env, ports[0])]
        try:
            await ready(f"http://127.0.0.1:{ports[0]}")
            async with httpx.AsyncClient(headers=admin_headers) as http:
                r = await http.put(f"http://127.0.0.1:{ports[0]}/v1/templates/scale", json={
                    "channel": "email", "subject": "Once", "text": "only once"})
                assert r.status_code == 200, r.text
            run = uuid.uuid4().hex[:8]
            cmds = [SendCommand(id=f"s-{run}-{n}", workspace_id="default",
                                profile_id=str(uuid.uuid4()), idempotency_key=f"s-{run}-{n}",
                                channel=Channel.email, template="scale",
                                to=Recipient(email=f"s{n}@example.com"),
                                requested_at=datetime.now(UTC)) for n in range(SENDS)]

            async def feed() -> None:  # ~20/s for 15 s
                for c in cmds:
                    await publish(producer, own.topic("send-commands"),
                                  [(message_key(c.workspace_id, c.profile_id), c)],
                                  topic_short="send-commands")
                    await asyncio.sleep(0.05)

            feeding = asyncio.create_task(feed())
            await asyncio.sleep(3)
            procs += [serve("messaging", env, p) for p in ports[1:]]  # 1 -> 3
            await asyncio.sleep(6)
            for p in procs[1:]:  # 3 -> 1, gracefully
                p.send_signal(signal.SIGTERM)
            for p in procs[1:]:
                await asyncio.to_thread(p.wait, 30)
            await feeding
            keys = [c.idempotency_key for c in cmds]
            deadline = asyncio.get_running_loop().time() + 120
            while True:
                async with engine.connect() as conn:
                    rows = {r["idempotency_key"]: dict(r) for r in (await conn.execute(
                        select(messages).where(messages.c.idempotency_key.in_(keys))
                    )).mappings()}
                if len(rows) == SENDS and all(r["status"] in ("sent", "unknown")
                                              for r in rows.values()):
                    break
                assert asyncio.get_running_loop().time() < deadline, len(rows)
                await asyncio.sleep(0.2)
            figures = reconcile("scale-messaging-1-3-1", rows, set(keys), smtp.delivered)
            figures.show()
            assert not figures.lost and not figures.duplicated and not figures.unexpected
            assert figures.unknown == 0  # nobody was killed
        finally:
            for p in procs:
                kill(p)
                await asyncio.to_thread(p.wait, 20)
            await producer.stop()
            await engine.dispose()


async def _scale_1_3_1(service: str, env: dict[str, str], procs: list[Any],
                       feeding: asyncio.Task[None]) -> None:
    """With `procs[0]` serving and `feeding` under way: two more replicas for 6 s, then
    SIGTERM them and let the feed finish."""
    await asyncio.sleep(3)
    procs += [serve(service, env, free_port()) for _ in range(2)]  # 1 -> 3
    await asyncio.sleep(6)
    for p in procs[1:]:  # 3 -> 1, gracefully
        p.send_signal(signal.SIGTERM)
    for p in procs[1:]:
        await asyncio.to_thread(p.wait, 30)
    await feeding


def _env(own: Settings, admin_headers: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "TOUCHPOINT_ENV": "test", "TOUCHPOINT_DATABASE_URL": own.database_url,
            "TOUCHPOINT_KAFKA_BOOTSTRAP": own.kafka_bootstrap,
            "TOUCHPOINT_TOPIC_PREFIX": own.topic_prefix,
            "TOUCHPOINT_BOOTSTRAP_ADMIN_KEY": admin_headers["Authorization"][7:],
            "TOUCHPOINT_CONSUMER_FETCH_MAX_WAIT_MS": "10"}


@pytest.mark.timeout(300)
async def test_scale_profile_1_3_1_under_load(settings: Settings,
                                              admin_headers: dict[str, str]) -> None:
    own = settings.model_copy(update={"topic_prefix": f"scalep-{uuid.uuid4().hex[:8]}."})
    await ensure_topics(own)
    ws, users, per_user = f"rel-{uuid.uuid4().hex[:8]}", 30, 10
    engine = create_engine(own.database_url)
    producer = create_producer(own, client_id="test-scale-profile")
    await producer.start()
    env = _env(own, admin_headers)
    port = free_port()
    procs = [serve("profile", env, port)]

    async def applied() -> tuple[int, int]:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(func.count()).select_from(events).where(
                events.c.workspace_id == ws))).scalar_one()
            counted = (await conn.execute(select(func.coalesce(func.sum(
                profiles.c.event_count), 0)).where(profiles.c.workspace_id == ws))).scalar_one()
        return rows, int(counted)

    async def feed() -> None:  # ~20 events/s for 15 s
        for n in range(per_user):
            for u in range(users):
                value = orjson.dumps({
                    "id": f"{ws}-{u}-{n}", "workspace_id": ws, "type": "track",
                    "event": "Scaling", "user_id": f"{ws}-user-{u}",
                    "timestamp": "2026-12-04T10:00:00Z", "received_at": "2026-12-04T10:00:00Z"})
                await producer.send_and_wait(own.topic("events"), value,
                                             key=f"{ws}:{ws}-user-{u}".encode())
                await asyncio.sleep(0.05)

    try:
        await ready(f"http://127.0.0.1:{port}")
        await _scale_1_3_1("profile", env, procs, asyncio.create_task(feed()))
        total = users * per_user
        deadline = asyncio.get_running_loop().time() + 120
        while (got := await applied())[0] < total or got[1] < total:
            assert asyncio.get_running_loop().time() < deadline, got
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)  # anything counted twice would show now
        rows, counted = await applied()
        f = Figures("scale-profile-1-3-1", total)
        f.lost = ["x"] * max(0, total - rows)
        f.duplicated = ["x"] * max(0, counted - total)
        f.show()
        assert rows == total and counted == total
    finally:
        for p in procs:
            kill(p)
            await asyncio.to_thread(p.wait, 20)
        await producer.stop()
        await engine.dispose()


@pytest.mark.timeout(300)
async def test_scale_journey_1_3_1_under_load(settings: Settings,
                                              admin_headers: dict[str, str]) -> None:
    own = settings.model_copy(update={"topic_prefix": f"scalej-{uuid.uuid4().hex[:8]}."})
    await ensure_topics(own)
    engine = create_engine(own.database_url)
    ws, key = f"ws-{uuid.uuid4().hex[:10]}", new_key("admin")
    async with engine.begin() as conn:
        await conn.execute(insert(journey_keys).values(key_hash=hash_key(key), kind="admin",
                                                       workspace_id=ws, name="reliability"))
    await engine.dispose()
    producer = create_producer(own, client_id="test-scale-journey")
    await producer.start()
    commands: list[dict[str, Any]] = []
    reader = AIOKafkaConsumer(own.topic("send-commands"), bootstrap_servers=own.kafka_bootstrap,
                              group_id=f"reader-{uuid.uuid4()}", auto_offset_reset="earliest",
                              fetch_max_wait_ms=20)
    await reader.start()

    async def read() -> None:
        while True:
            for batch in (await reader.getmany(timeout_ms=100)).values():
                commands.extend(c for c in map(orjson.loads, (r.value for r in batch))
                                if c["workspace_id"] == ws)

    reading = asyncio.create_task(read())
    env = _env(own, admin_headers)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs = [serve("journey", env, port)]
    customers = [str(uuid.uuid4()) for _ in range(60)]

    async def enter(profile: str) -> None:
        now = datetime.now(UTC)
        eid = f"ev-{uuid.uuid4().hex}"
        await producer.send_and_wait(own.topic("profile-events"), encode(ProfileEvent(
            id=eid, workspace_id=ws, profile_id=profile,
            profile=ProfileSnapshot(profile_id=profile, email=f"{profile}@example.com"),
            event=Event(id=eid, workspace_id=ws, type=EventType.track, event="Rel Scaled",
                        user_id=f"u-{profile}", timestamp=now, received_at=now))),
            key=f"{ws}:{profile}".encode())

    async def feed() -> None:  # 4 customers/s for 15 s
        for profile in customers:
            await enter(profile)
            await asyncio.sleep(0.25)

    try:
        await ready(url)
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http:
            r = await http.post(f"{url}/v1/journeys", json={
                "key": "rel-scaled", "name": "Scaling", "stages": [
                    {"key": "in", "enter": {"event": "Rel Scaled"},
                     "steps": [{"id": "settle", "wait": "PT1S"},
                               {"id": "hi", "send": {"channel": "email",
                                                     "template": "welcome"}}]}]})
            assert r.status_code == 201, r.text
            r = await http.post(f"{url}/v1/journeys/rel-scaled/publish")
            assert r.status_code == 200, r.text
        await _scale_1_3_1("journey", env, procs, asyncio.create_task(feed()))
        deadline = asyncio.get_running_loop().time() + 120
        while len({c["profile_id"] for c in commands}) < len(customers):
            assert asyncio.get_running_loop().time() < deadline, len(commands)
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)  # a late second send would show now
        keys: dict[str, set[str]] = {}
        for c in commands:
            keys.setdefault(c["profile_id"], set()).add(c["idempotency_key"])
        f = Figures("scale-journey-1-3-1", len(customers))
        f.lost = [p for p in customers if p not in keys]
        f.duplicated = [p for p, k in keys.items() if len(k) > 1]
        f.unexpected = [p for p in keys if p not in set(customers)]
        f.bound = f"re-published under the same key: {len(commands) - len(keys)}"
        f.show()
        assert not f.lost and not f.duplicated and not f.unexpected
    finally:
        for p in procs:
            kill(p)
            await asyncio.to_thread(p.wait, 20)
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        await reader.stop()
        await producer.stop()
