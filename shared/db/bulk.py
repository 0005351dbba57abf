"""Bulk writes as one `INSERT ... SELECT FROM unnest(...)`: one statement text whatever the
row count, so asyncpg prepares it once (a multi-row VALUES is re-prepared per size)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table, text
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncConnection


def unnest_insert_sql(table: Table, types: Mapping[str, str], suffix: str = "") -> str:
    """`types`: column -> Postgres type of one element (text, jsonb, timestamptz, ...)."""
    columns = list(types)
    arrays = ", ".join(f"CAST(:{c} AS {types[c]}[])" for c in columns)
    return (f'INSERT INTO "{table.schema}"."{table.name}" ({", ".join(columns)}) '
            f"SELECT * FROM unnest({arrays}) {suffix}")


async def insert_unnest(conn: AsyncConnection, table: Table, types: Mapping[str, str],
                        rows: Sequence[Mapping[str, Any]], suffix: str = "") -> CursorResult[Any]:
    """Insert `rows` (dicts with every column of `types`) in one statement."""
    params = {c: [row[c] for row in rows] for c in types}
    return await conn.execute(text(unnest_insert_sql(table, types, suffix)), params)
