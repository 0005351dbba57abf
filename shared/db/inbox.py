"""Inbox: remember which messages a consumer already applied, in the same transaction."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Column, DateTime, MetaData, PrimaryKeyConstraint, String, Table, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection


def inbox_table(metadata: MetaData) -> Table:
    return Table(
        "inbox",
        metadata,
        Column("consumer", String(100), nullable=False),
        Column("message_id", String(300), nullable=False),
        Column("processed_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
        PrimaryKeyConstraint("consumer", "message_id"),
    )


async def claim_new(
    conn: AsyncConnection, table: Table, consumer: str, message_ids: Iterable[str]
) -> set[str]:
    """Record the ids; return those not seen before. Call inside the effect's transaction."""
    rows = [{"consumer": consumer, "message_id": m} for m in dict.fromkeys(message_ids)]
    if not rows:
        return set()
    # executemany (insertmanyvalues) rather than .values(rows): no giant statement to compile.
    stmt = insert(table).on_conflict_do_nothing().returning(table.c.message_id)
    return set((await conn.execute(stmt, rows)).scalars())
