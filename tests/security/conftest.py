"""The abuse suite's world: all four services in-process on the real Postgres and broker,
two workspaces with an admin key and a write key each, and every log record captured.

Personal data and keys seeded here are listed in `Stack.secrets`; the last test of the
suite (test_z_logs.py) searches every captured log line for them.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert

from services.ingest import tables as ingest_tables
from services.ingest.app import create_app as ingest_app
from services.journey import tables as journey_tables
from services.journey.app import create_app as journey_app
from services.messaging import tables as messaging_tables
from services.messaging.app import create_app as messaging_app
from services.profile import tables as profile_tables
from services.profile.app import create_app as profile_app
from shared.auth import hash_key
from shared.db import create_engine
from shared.kafka.admin import ensure_topics
from shared.settings import Settings
from shared.testing.ready import wait_ready
from shared.testing.servers import serve_app
from tests.security.support import CapturedLogs, Stack, Tenant

SERVICES: dict[str, tuple[Callable[[Settings], FastAPI], Table]] = {
    "ingest": (ingest_app, ingest_tables.api_keys),
    "profile": (profile_app, profile_tables.api_keys),
    "journey": (journey_app, journey_tables.api_keys),
    "messaging": (messaging_app, messaging_tables.api_keys),
}


def _tenant(run: str, name: str, number: int) -> Tenant:
    return Tenant(workspace=f"ws-sec-{name}-{run}",
                  admin_key=f"tp_admin_sec{name}_{uuid.uuid4().hex}",
                  write_key=f"tp_write_sec{name}_{uuid.uuid4().hex}",
                  email=f"victim.{name}.{run}@example.com",
                  phone=f"+44207946{number:04d}")  # Ofcom's drama range: never a real line


async def _register(settings: Settings, tenants: list[Tenant]) -> None:
    engine = create_engine(settings.database_url)
    try:
        async with engine.begin() as conn:
            for table in {id(t): t for _app, t in SERVICES.values()}.values():
                rows: list[dict[str, Any]] = []
                for t in tenants:
                    rows.append({"key_hash": hash_key(t.admin_key), "kind": "admin",
                                 "workspace_id": t.workspace, "name": "security suite"})
                    rows.append({"key_hash": hash_key(t.write_key), "kind": "write",
                                 "workspace_id": t.workspace, "name": "security suite"})
                await conn.execute(insert(table).values(rows).on_conflict_do_nothing())
    finally:
        await engine.dispose()


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    run = uuid.uuid4().hex[:8]
    # The matrix sends hundreds of refused keys from one address on purpose: with the
    # failed-auth throttle at its default they would turn into 429s (tested on its own in
    # tests/integration/test_auth_throttle.py); here each refusal must be the real 401/403.
    own = settings.model_copy(update={"topic_prefix": f"test-sec-{run}.",
                                      "auth_failure_burst": 100_000})
    await ensure_topics(own)
    number = random.Random(run).randrange(0, 500)
    a, b = _tenant(run, "a", number), _tenant(run, "b", number + 500)
    await _register(own, [a, b])
    logs = CapturedLogs()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(logs)
    root.setLevel(logging.INFO)
    apps = {name: make(own) for name, (make, _table) in SERVICES.items()}
    try:
        async with AsyncExitStack() as stack_, httpx.AsyncClient(timeout=30) as http:
            urls = {name: await stack_.enter_async_context(serve_app(app))
                    for name, app in apps.items()}
            for url in urls.values():
                await wait_ready(http, url, timeout=60)
            world = Stack(own, apps, urls, a, b, http, logs)
            world.secrets += [a.admin_key, a.write_key, a.email, a.phone,
                              b.admin_key, b.write_key, b.email, b.phone]
            yield world
    finally:
        root.removeHandler(logs)
        root.setLevel(old_level)
