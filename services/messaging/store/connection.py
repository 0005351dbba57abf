"""Connections for messaging's statements: asyncpg itself where the cost matters.

The send path's statements (claim, queued -> sending, outcomes, outbox) go to asyncpg
directly, one statement per batch over unnest() arrays: SQLAlchemy's compiling, parameter
and result handling cost several times what Postgres spends on them (about a sixth of
the service's CPU per email). The rest of messaging stays on SQLAlchemy Core.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db.driver import driver as sqlalchemy_driver

Driver: TypeAlias = "asyncpg.Connection[Any]"


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[Driver]:
    """A transaction on one of the engine's pooled connections, driven by asyncpg itself.
    JSONB goes through the codec the engine installed: written as JSON text, read decoded."""
    async with engine.connect() as conn:
        db: Driver = await sqlalchemy_driver(conn)  # not in a SQLAlchemy transaction
        try:
            async with db.transaction():
                yield db
        except BaseException:
            if db.is_closed():  # don't hand a dead connection back to the pool
                await conn.invalidate()
            raise


@asynccontextmanager
async def one_statement(engine: AsyncEngine) -> AsyncIterator[Driver]:
    """A pooled connection for a single statement outside any transaction: atomic on its
    own, and without a BEGIN and a COMMIT round trip around it (the send path's claims and
    ledger flushes whose parts fit in one statement of data-modifying CTEs)."""
    async with engine.connect() as conn:
        db: Driver = await sqlalchemy_driver(conn)  # not in a SQLAlchemy transaction
        try:
            yield db
        except BaseException:
            if db.is_closed():  # don't hand a dead connection back to the pool
                await conn.invalidate()
            raise


async def driver(conn: AsyncConnection | Driver) -> Driver:
    """asyncpg itself, also inside a SQLAlchemy transaction (the API's paths)."""
    if not isinstance(conn, AsyncConnection):
        return conn
    return await sqlalchemy_driver(conn)


def columns(rows: Iterable[tuple[str, ...]]) -> list[list[str]]:
    """Rows as the column arrays an `unnest($1::text[], ...)` takes."""
    return [list(column) for column in zip(*rows, strict=True)]
