"""Inbox: remember which messages a consumer already applied, in the same transaction."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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

from shared.db.driver import driver


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


_CLAIM: dict[tuple[str | None, str], str] = {}


def _name(table: Table) -> str:
    return f'"{table.schema}"."{table.name}"' if table.schema else f'"{table.name}"'


def _claim_sql(table: Table) -> str:
    key = (table.schema, table.name)
    if (sql := _CLAIM.get(key)) is None:
        sql = _CLAIM[key] = (
            f"INSERT INTO {_name(table)} (consumer, message_id) SELECT $1, m "
            "FROM unnest($2::text[]) AS m ON CONFLICT DO NOTHING RETURNING message_id")
    return sql


def claim_cte(table: Table) -> str:
    """The claim as a CTE named `claimed` (column `message_id`; parameters $1 the consumer,
    $2 the ids, deduplicated by the caller): a service puts the reads every batch needs in
    the same statement, and the claim costs no round trip of its own."""
    return f"claimed AS ({_claim_sql(table)})"


_CLAIM_PAIRS: dict[tuple[str | None, str], str] = {}


def claim_pairs_cte(table: Table) -> str:
    """The claim of several consumers' ids at once, as a CTE named `claimed` (columns
    `consumer`, `message_id`; parameters $1 the consumers and $2 the ids, paired by
    position, deduplicated by the caller): one poll's records of two topics, each under
    its own consumer name, claimed in one round trip (shared/kafka/consumer.py's joint
    handlers)."""
    key = (table.schema, table.name)
    if (sql := _CLAIM_PAIRS.get(key)) is None:
        sql = _CLAIM_PAIRS[key] = (
            f"claimed AS (INSERT INTO {_name(table)} (consumer, message_id) SELECT c, m "
            "FROM unnest($1::text[], $2::text[]) AS p(c, m) ON CONFLICT DO NOTHING "
            "RETURNING consumer, message_id)")
    return sql


def pairs(message_ids: Mapping[str, Iterable[str]]) -> tuple[list[str], list[str]]:
    """`claim_pairs_cte`'s $1 and $2 from ids by consumer, each consumer's deduplicated."""
    consumers: list[str] = []
    ids: list[str] = []
    for consumer, theirs in message_ids.items():
        unique = list(dict.fromkeys(theirs))
        consumers += [consumer] * len(unique)
        ids += unique
    return consumers, ids


async def claim_new(
    conn: AsyncConnection, table: Table, consumer: str, message_ids: Iterable[str]
) -> set[str]:
    """Record the ids; return those not seen before. Call inside the effect's transaction.

    One statement straight to asyncpg (prepared once per connection, no SQLAlchemy
    statement or result handling); as the transaction's first statement it costs the
    BEGIN it would have cost anyway (shared/db/driver.py)."""
    ids = list(dict.fromkeys(message_ids))
    if not ids:
        return set()
    rows = await (await driver(conn)).fetch(_claim_sql(table), consumer, ids)
    return {r[0] for r in rows}
