"""Statements sent straight to asyncpg run inside the caller's SQLAlchemy transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.profile import repository as repo
from shared.db import create_engine
from shared.db.driver import driver
from shared.settings import Settings

XID = "SELECT pg_current_xact_id()::text"


async def _direct(conn: AsyncConnection) -> Any:
    return (await (await driver(conn)).fetch(XID))[0][0]


async def _profile_repository(conn: AsyncConnection) -> Any:
    return (await repo.fetch(conn, XID))[0][0]


@pytest.mark.parametrize("first", [_direct, _profile_repository])
async def test_a_driver_statement_first_in_a_transaction_is_inside_it(
        settings: Settings, first: Callable[[AsyncConnection], Awaitable[Any]]) -> None:
    # SQLAlchemy sends BEGIN with its first statement; a statement sent to asyncpg before
    # that would autocommit (a FOR UPDATE lock released at once).
    engine = create_engine(settings.database_url)
    try:
        async with engine.begin() as conn:
            by_driver = await first(conn)
            by_sqlalchemy = (await conn.execute(text(XID))).scalar()
        assert by_driver == by_sqlalchemy
    finally:
        await engine.dispose()


async def test_a_driver_write_first_in_a_transaction_rolls_back_with_it(
        settings: Settings, unique: str) -> None:
    engine = create_engine(settings.database_url)
    table = f"public.t_{unique}"
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(f"CREATE TABLE {table} (id int)")
        with pytest.raises(RuntimeError):
            async with engine.begin() as conn:
                await (await driver(conn)).execute(f"INSERT INTO {table} VALUES (1)")
                raise RuntimeError("the handler failed after its first write")
        async with engine.begin() as conn:
            await (await driver(conn)).execute(f"INSERT INTO {table} VALUES (2)")
        async with engine.connect() as conn:
            rows = (await conn.exec_driver_sql(f"SELECT id FROM {table}")).scalars().all()
        assert rows == [2]  # the first rolled back, the second committed
    finally:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        await engine.dispose()
