"""Channel configurations as the send path reads them, and the shared rate-limit buckets."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.messaging.store.connection import Driver
from services.messaging.tables import channels, rate_buckets


async def channel_rows(conn: AsyncConnection, workspace_id: str) -> list[Any]:
    """The workspace's channel rows (every channel and provider)."""
    return list((await conn.execute(select(channels).where(
        channels.c.workspace_id == workspace_id))).mappings())


_TAKE = (f"INSERT INTO {rate_buckets.fullname} AS b (workspace_id, channel, provider, tokens, "
         "stamp) VALUES ($1, $2, $3, $5 - 1, clock_timestamp()) "
         "ON CONFLICT (workspace_id, channel, provider) DO UPDATE SET "
         "tokens = LEAST($5, b.tokens + EXTRACT(EPOCH FROM clock_timestamp() - b.stamp) * $4)"
         " - 1, stamp = clock_timestamp() RETURNING tokens")


async def take_token(db: Driver, key: tuple[str, str, str], rate: float, burst: float) -> float:
    """Take one token of the shared bucket `key` (workspace, channel, provider); returns the
    seconds to wait before using it. The row lock orders concurrent takers, across
    replicas: the bucket may go into debt, each taker waiting for its own slot."""
    tokens = await db.fetchval(_TAKE, *key, rate, burst)
    return 0.0 if tokens >= 0 else float(-tokens / rate)
