"""Async SQLAlchemy engine over asyncpg."""

from __future__ import annotations

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def create_engine(database_url: str, *, pool_size: int = 10) -> AsyncEngine:
    """One engine per process. Short connect/command timeouts so outages surface fast.

    No pre-ping (a round trip per checkout): a dead connection raises, is invalidated,
    and the caller's transient-error path (consumer retry, HTTP 503) takes over.
    """
    return create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=5,
        connect_args={"timeout": 3, "command_timeout": 30},
        # Errors and logs never quote the SQL parameters: they hold emails, phones, traits.
        hide_parameters=True,
        json_serializer=_dumps,  # JSONB parameters: orjson is several times faster than json
        json_deserializer=orjson.loads,
    )


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
