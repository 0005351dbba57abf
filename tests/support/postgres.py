"""A Postgres server for tests: the machine's on 127.0.0.1:5432 when reachable, else embedded."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from tests.support.net import free_port

T = TypeVar("T")

LOCAL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, also when the caller already runs an event loop (benches)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _reachable(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields a server DSN (postgresql://...) of a `postgres` database with trust auth."""
    if _run(_reachable(LOCAL)):
        yield LOCAL
        return
    from touchpoint.embedded import EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="tp-pg-") as state:
        server = EmbeddedPostgres(Path(state), free_port(), say=print)
        server.start()
        try:
            yield f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
        finally:
            server.stop()


@contextmanager
def scratch_database(server_dsn: str) -> Iterator[str]:
    """A new database for this run; yields its SQLAlchemy asyncpg URL; dropped afterwards."""
    name = f"tp_test_{uuid.uuid4().hex[:12]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(server_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    _run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield server_dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + \
            f"/{name}"
    finally:
        _run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
