"""Channel configurations (as the API writes them and the send path reads them), and the
shared rate-limit buckets."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.messaging.store.connection import Driver
from services.messaging.tables import channels, rate_buckets


async def channel_rows(conn: AsyncConnection, workspace_id: str, *,
                       ordered: bool = False) -> list[Any]:
    """The workspace's channel rows (every channel and provider); `ordered`: by channel and
    provider, as the API lists them."""
    query = select(channels).where(channels.c.workspace_id == workspace_id)
    if ordered:
        query = query.order_by(channels.c.channel, channels.c.provider)
    return list((await conn.execute(query)).mappings())


def _one(workspace_id: str, channel: str, provider: str) -> Any:
    return (channels.c.workspace_id == workspace_id) & (channels.c.channel == channel) & \
        (channels.c.provider == provider)


async def channel_row(conn: AsyncConnection, workspace_id: str, channel: str,
                      provider: str) -> Any:
    """One provider's configuration row, or None."""
    return (await conn.execute(select(channels).where(
        _one(workspace_id, channel, provider)))).mappings().first()


async def sealed_secrets(conn: AsyncConnection, workspace_id: str, channel: str,
                         provider: str) -> Any:
    """One provider's credentials as stored (sealed), or None."""
    return (await conn.execute(select(channels.c.secrets).where(
        _one(workspace_id, channel, provider)))).scalar()


async def provider_secrets(conn: AsyncConnection, workspace_id: str, provider: str) -> Any:
    """A provider's credentials as stored (sealed), whatever its channel, or None."""
    return (await conn.execute(select(channels.c.secrets).where(
        channels.c.workspace_id == workspace_id, channels.c.provider == provider))).scalar()


async def save_channel(conn: AsyncConnection, workspace_id: str, channel: str, provider: str,
                       values: dict[str, Any]) -> Any:
    """Create or replace one provider's configuration; returns its row."""
    stmt = insert(channels).values(workspace_id=workspace_id, channel=channel,
                                   provider=provider, **values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[channels.c.workspace_id, channels.c.channel, channels.c.provider],
        set_={**values, "updated_at": func.now()})
    return (await conn.execute(stmt.returning(channels))).mappings().one()


async def delete_channel(conn: AsyncConnection, workspace_id: str, channel: str,
                         provider: str) -> bool:
    """False when there was no such configuration."""
    result = await conn.execute(delete(channels).where(_one(workspace_id, channel, provider)))
    return bool(result.rowcount)


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
