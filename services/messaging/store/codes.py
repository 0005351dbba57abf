"""Discount codes' statements: pools filled through the API, a customer's code from a pool,
handed out once, and the codes of unsent messages released (see codes.py for when)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.messaging.store.connection import Driver, driver
from services.messaging.tables import code_pools
from services.messaging.tables import codes as codes_table

_T = codes_table.fullname
_MINE = f"SELECT code FROM {_T} WHERE workspace_id = $1 AND pool = $2 AND profile_id = $3"
_TAKE = (f"UPDATE {_T} SET profile_id = $3, message_id = $4, assigned_at = now() "
         f"WHERE (workspace_id, pool, code) = (SELECT workspace_id, pool, code FROM {_T} "
         "WHERE workspace_id = $1 AND pool = $2 AND profile_id IS NULL "
         "LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING code")
_ANY_FREE = (f"SELECT EXISTS (SELECT 1 FROM {_T} WHERE workspace_id = $1 AND pool = $2 "
             "AND profile_id IS NULL)")
_RELEASE = (f"UPDATE {_T} SET profile_id = NULL, message_id = NULL, assigned_at = NULL "
            "WHERE message_id = ANY($1::text[])")


class PoolEmpty(Exception):
    def __init__(self, pool: str) -> None:
        super().__init__(f"code pool {pool} empty")
        self.pool = pool


async def code_for(db: Driver, *, workspace_id: str, pool: str, profile_id: str,
                   message_id: str) -> str:
    """The customer's code from `pool`: theirs if they have one, else a free one."""
    for attempt in range(4):
        if (mine := await db.fetchval(_MINE, workspace_id, pool, profile_id)) is not None:
            return str(mine)
        try:
            async with db.transaction():  # a savepoint: a lost race leaves the rest intact
                taken = await db.fetchval(_TAKE, workspace_id, pool, profile_id, message_id)
        except asyncpg.UniqueViolationError:  # another replica gave this customer one now
            continue
        if taken is not None:
            return str(taken)
        # Every free code was locked by other transactions: empty only if none of them is
        # still free once they are done (a lost race releases its row).
        if not await db.fetchval(_ANY_FREE, workspace_id, pool):
            break
        await asyncio.sleep(0.01 * (attempt + 1))
    raise PoolEmpty(pool)


async def release_codes(db: Driver, message_ids: Sequence[str]) -> None:
    """The codes these messages were handed go back to their pools."""
    if message_ids:
        await db.execute(_RELEASE, list(message_ids))


async def ensure_pool(conn: AsyncConnection, workspace_id: str, key: str) -> None:
    await conn.execute(insert(code_pools).values(workspace_id=workspace_id, key=key)
                       .on_conflict_do_update(index_elements=[code_pools.c.workspace_id,
                                                              code_pools.c.key],
                                              set_={"updated_at": func.now()}))


async def pool_exists(conn: AsyncConnection, workspace_id: str, key: str) -> bool:
    return (await conn.execute(select(code_pools.c.key).where(
        code_pools.c.workspace_id == workspace_id, code_pools.c.key == key))).first() is not None


async def codes_like(conn: AsyncConnection, workspace_id: str, pool: str,
                     prefix: str) -> set[str]:
    """The pool's codes that start with `prefix` (what a generator must not repeat)."""
    db = await driver(conn)
    return {r[0] for r in await db.fetch(
        f"SELECT code FROM {_T} WHERE workspace_id = $1 AND pool = $2 AND code LIKE $3",
        workspace_id, pool, prefix + "%")}


async def add_codes(conn: AsyncConnection, workspace_id: str, pool: str,
                    new: list[str]) -> set[str]:
    """Add codes to a pool; returns those added (the others were there already)."""
    db = await driver(conn)
    return {r[0] for r in await db.fetch(
        f"INSERT INTO {_T} (workspace_id, pool, code) "
        "SELECT $1, $2, c FROM unnest($3::text[]) AS c ON CONFLICT DO NOTHING "
        "RETURNING code", workspace_id, pool, new)}


async def pool_counts(conn: Any, workspace_id: str, key: str) -> tuple[int, int]:
    """A pool's size and how many of its codes are not handed out yet."""
    row = (await conn.execute(select(func.count(), func.count().filter(
        codes_table.c.profile_id.is_(None))).where(codes_table.c.workspace_id == workspace_id,
                                                    codes_table.c.pool == key))).one()
    return int(row[0]), int(row[1])
