"""Inbox: remember which messages a consumer already applied, in the same transaction."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    func,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db.bulk import insert_unnest


def inbox_table(metadata: MetaData) -> Table:
    return Table(
        "inbox",
        metadata,
        Column("consumer", String(100), nullable=False),
        Column("message_id", String(300), nullable=False),
        Column("processed_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
        PrimaryKeyConstraint("consumer", "message_id"),
        # BRIN: nearly free to maintain on this append-mostly table; serves the retention
        # pass (shared/db/retention.py), which deletes rows older than the window.
        Index("inbox_processed_at", "processed_at", postgresql_using="brin"),
    )


async def claim_new(
    conn: AsyncConnection, table: Table, consumer: str, message_ids: Iterable[str]
) -> set[str]:
    """Record the ids; return those not seen before. Call inside the effect's transaction."""
    rows = [{"consumer": consumer, "message_id": m} for m in dict.fromkeys(message_ids)]
    if not rows:
        return set()
    result = await insert_unnest(conn, table, {"consumer": "text", "message_id": "text"}, rows,
                                 "ON CONFLICT DO NOTHING RETURNING message_id")
    return set(result.scalars())
