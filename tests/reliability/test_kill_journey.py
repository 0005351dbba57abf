"""SIGKILL of `touchpoint serve journey` while customers enter a journey (an entry, a 1 s
durable timer, a send), restart, and reconcile the send commands on the topic: every
customer gets exactly one send (one idempotency key; a command re-published under the same
key is deduplicated by messaging and counted apart), none lost."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy.dialects.postgresql import insert

from services.journey.tables import api_keys
from shared.auth import hash_key, new_key
from shared.contracts.events import Event, EventType
from shared.contracts.profile import ProfileEvent, ProfileSnapshot
from shared.db import create_engine
from shared.kafka import create_producer
from shared.kafka.admin import ensure_topics
from shared.kafka.codec import encode
from shared.settings import Settings
from shared.testing.net import free_port
from tests.reliability.harness import ROUNDS, Figures, kill, ready, serve

pytestmark = pytest.mark.integration
CUSTOMERS = 60
JOURNEY = {"key": "rel-welcome", "name": "Reliability welcome",
           "stages": [{"key": "joined", "enter": {"event": "Rel Signed Up"},
                       "steps": [{"id": "settle", "wait": "PT1S"},
                                 {"id": "hello", "send": {"channel": "email",
                                                          "template": "welcome"}}]}]}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("round_", range(ROUNDS))
async def test_sigkill_journey_mid_flow_sends_each_customer_once(
        settings: Settings, admin_headers: dict[str, str], round_: int) -> None:
    own = settings.model_copy(update={"topic_prefix": f"killj-{uuid.uuid4().hex[:8]}."})
    await ensure_topics(own)
    engine = create_engine(own.database_url)
    ws, key = f"ws-{uuid.uuid4().hex[:10]}", new_key("admin")
    async with engine.begin() as conn:
        await conn.execute(insert(api_keys).values(key_hash=hash_key(key), kind="admin",
                                                   workspace_id=ws, name="reliability"))
    await engine.dispose()
    producer = create_producer(own, client_id="test-kill-journey")
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
    port = free_port()
    env = {**os.environ, "TOUCHPOINT_ENV": "test", "TOUCHPOINT_DATABASE_URL": own.database_url,
           "TOUCHPOINT_KAFKA_BOOTSTRAP": own.kafka_bootstrap,
           "TOUCHPOINT_TOPIC_PREFIX": own.topic_prefix,
           "TOUCHPOINT_BOOTSTRAP_ADMIN_KEY": admin_headers["Authorization"][7:],
           "TOUCHPOINT_CONSUMER_FETCH_MAX_WAIT_MS": "10"}
    url = f"http://127.0.0.1:{port}"
    proc = serve("journey", env, port)
    try:
        await ready(url)
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http:
            r = await http.post(f"{url}/v1/journeys", json=JOURNEY)
            assert r.status_code == 201, r.text
            r = await http.post(f"{url}/v1/journeys/{JOURNEY['key']}/publish")
            assert r.status_code == 200, r.text
        profiles = [str(uuid.uuid4()) for _ in range(CUSTOMERS)]

        async def enter(profile: str) -> None:
            now = datetime.now(UTC)
            eid = f"ev-{uuid.uuid4().hex}"
            message = ProfileEvent(
                id=eid, workspace_id=ws, profile_id=profile,
                profile=ProfileSnapshot(profile_id=profile, email=f"{profile}@example.com"),
                event=Event(id=eid, workspace_id=ws, type=EventType.track,
                            event="Rel Signed Up", user_id=f"u-{profile}", timestamp=now,
                            received_at=now))
            await producer.send_and_wait(own.topic("profile-events"), encode(message),
                                         key=f"{ws}:{profile}".encode())

        async def feed() -> None:  # ~20 customers/s, before, during and after the kill
            for profile in profiles:
                await enter(profile)
                await asyncio.sleep(0.05)

        await enter(str(uuid.uuid4()))  # warm-up: the consumer has joined once its send is out
        deadline = asyncio.get_running_loop().time() + 60
        while not commands:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        feeding = asyncio.create_task(feed())
        while len(commands) < 10 + 10 * round_:
            await asyncio.sleep(0.02)
        kill(proc)
        killed = time.monotonic()
        await asyncio.to_thread(proc.wait, 20)
        at_kill = len(commands)
        proc = serve("journey", env, port)
        await feeding
        deadline = asyncio.get_running_loop().time() + 120
        while len({c["profile_id"] for c in commands}) < CUSTOMERS + 1:
            assert asyncio.get_running_loop().time() < deadline, len(commands)
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)  # a late second send would show now
        keys: dict[str, set[str]] = {}
        warm_up = commands[0]["profile_id"]
        mine = [c for c in commands if c["profile_id"] != warm_up]
        for c in mine:
            keys.setdefault(c["profile_id"], set()).add(c["idempotency_key"])
        f = Figures(f"kill-journey#{round_}", CUSTOMERS)
        f.lost = [p for p in profiles if p not in keys]
        f.duplicated = [p for p, k in keys.items() if len(k) > 1]
        f.unexpected = [p for p in keys if p not in set(profiles)]
        f.bound = (f"killed at {at_kill - 1} sends; re-published under the same key (deduped by "
                   f"messaging): {len(mine) - len(keys)}; all sent "
                   f"{time.monotonic() - killed:.1f}s after the kill")
        f.show()
        assert not f.lost and not f.duplicated and not f.unexpected
    finally:
        kill(proc)
        await asyncio.to_thread(proc.wait, 20)
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        await reader.stop()
        await producer.stop()
