"""Undeliverable addresses, by hash (see domain/addresses.py)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncConnection

from services.messaging.domain.addresses import address_hash
from services.messaging.store.connection import Driver, driver
from services.messaging.tables import undeliverable


async def mark_undeliverable(conn: AsyncConnection | Driver, *, workspace_id: str, channel: str,
                             addresses: Iterable[str], reason: str) -> None:
    hashes = [address_hash(channel, a) for a in dict.fromkeys(addresses)]
    if hashes:
        await (await driver(conn)).execute(
            f"INSERT INTO {undeliverable.fullname} (workspace_id, channel, address_hash, reason) "
            "SELECT $1, $2, h, $3 FROM unnest($4::text[]) AS h ON CONFLICT DO NOTHING",
            workspace_id, channel, reason[:300], hashes)


async def mark_deliverable(conn: AsyncConnection, *, workspace_id: str, channel: str,
                           address: str) -> None:
    await conn.execute(undeliverable.delete().where(
        undeliverable.c.workspace_id == workspace_id, undeliverable.c.channel == channel,
        undeliverable.c.address_hash == address_hash(channel, address)))
