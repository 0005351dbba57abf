"""A running profile service of its own (own topics, own workspaces) for profile tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from sqlalchemy.dialects.postgresql import insert

from services.profile.app import create_app
from services.profile.settings import ProfileSettings
from services.profile.tables import api_keys
from shared.auth import hash_key
from shared.contracts.delivery import DeliveryEvent
from shared.contracts.events import Event, EventType
from shared.db import create_engine
from shared.kafka.admin import ensure_topics
from shared.kafka.codec import encode, headers_for
from shared.settings import Settings
from shared.testing.servers import serve_app
from shared.testing.topics import read_until

T = TypeVar("T")


@dataclass
class ProfileWorld:
    settings: ProfileSettings
    url: str
    http: httpx.AsyncClient
    producer: AIOKafkaProducer

    async def workspace(self) -> tuple[str, dict[str, str]]:
        """A fresh workspace and an admin key for it."""
        ws, key = f"ws-{uuid.uuid4().hex[:10]}", f"tp_admin_{uuid.uuid4().hex}"
        engine = create_engine(self.settings.database_url)
        async with engine.begin() as conn:
            await conn.execute(insert(api_keys).values(key_hash=hash_key(key), kind="admin",
                                                       workspace_id=ws, name="test"))
        await engine.dispose()
        return ws, {"Authorization": f"Bearer {key}"}

    async def send(self, ws: str, *calls: dict[str, Any], checked: bool = True) -> list[str]:
        """Publish events (Segment-shaped, snake_case) as ingest would; returns their ids.
        `checked=False` skips the model's validation: a poison message ingest would refuse."""
        ids = []
        for call in calls:
            now = datetime.now(UTC).isoformat()
            fields = {"id": f"m-{uuid.uuid4().hex}", "workspace_id": ws,
                      "timestamp": now, "received_at": now, **call}
            event = Event.model_validate(fields) if checked else Event.model_construct(**{
                **fields, "type": EventType(fields["type"])})
            await self.producer.send_and_wait(
                self.settings.topic("events"), encode(event),
                key=f"{ws}:{event.customer}".encode(),
                headers=headers_for(event, "events"))
            ids.append(event.id)
        return ids

    async def deliver(self, ws: str, *outcomes: dict[str, Any]) -> None:
        for outcome in outcomes:
            d = DeliveryEvent.model_validate({
                "id": f"d-{uuid.uuid4().hex}", "workspace_id": ws,
                "message_id": f"msg-{uuid.uuid4().hex}", "channel": "email",
                "occurred_at": datetime.now(UTC).isoformat(), **outcome})
            await self.producer.send_and_wait(
                self.settings.topic("delivery-events"), encode(d),
                key=f"{ws}:{d.profile_id}".encode(), headers=headers_for(d, "delivery-events"))

    async def lookup(self, headers: dict[str, str], **ident: str) -> dict[str, Any] | None:
        r = await self.http.get("/v1/profiles/lookup", params=ident, headers=headers)
        assert r.status_code in (200, 404), r.text
        return r.json() if r.status_code == 200 else None

    async def changes(self, ws: str, done: Callable[[list[dict[str, Any]]], bool],
                      timeout: float = 30) -> list[dict[str, Any]]:
        """profile-changes of this workspace, read until `done(changes)` holds."""
        return await self._read("profile-changes", ws, done, timeout)

    async def profile_events(self, ws: str, done: Callable[[list[dict[str, Any]]], bool],
                             timeout: float = 30) -> list[dict[str, Any]]:
        return await self._read("profile-events", ws, done, timeout)

    async def _read(self, topic: str, ws: str, done: Callable[[list[dict[str, Any]]], bool],
                    timeout: float) -> list[dict[str, Any]]:
        def mine(records: list[Any]) -> list[dict[str, Any]]:
            values = [orjson.loads(r.value) for r in records]
            return [v for v in values if v["workspace_id"] == ws]
        records = await read_until(self.settings.kafka_bootstrap, self.settings.topic(topic),
                                   lambda rs: done(mine(rs)), timeout)
        return mine(records)

async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float = 30) -> T:
    """Poll `probe` until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.1)


async def profile_world(settings: Settings,
                        recompute_interval_s: float = 3600) -> AsyncIterator[ProfileWorld]:
    own = ProfileSettings(**{**settings.model_dump(),
                             "topic_prefix": f"test-profile-{uuid.uuid4().hex[:8]}.",
                             "profile_recompute_interval_s": recompute_interval_s})
    await ensure_topics(own)
    producer = AIOKafkaProducer(bootstrap_servers=own.kafka_bootstrap, acks="all", linger_ms=0)
    await producer.start()
    try:
        async with serve_app(create_app(own)) as url, \
                httpx.AsyncClient(base_url=url, timeout=30) as http:
            for _ in range(300):
                if (await http.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            yield ProfileWorld(own, url, http, producer)
    finally:
        await producer.stop()
