"""repository.unnest_args: text columns sent as one joined text and split in SQL give back
exactly the rows the arrays give, whatever the values (empty strings, NULLs, the separator
itself, one row, none)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.profile.repository import SEP, columns, fetch, unnest_args
from shared.db import create_engine

pytestmark = pytest.mark.integration


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.mark.parametrize("rows", [
    [("ws", "", "a", date(2026, 1, 2))],
    [("ws", "", "", date(2026, 1, 2)), ("ws", "b", "", date(2026, 1, 3))],
    [("w1", "x", None, date(2026, 1, 2)), ("w2", "y", "z", date(2026, 1, 3))],
    [("w1", f"a{SEP}b", "c", date(2026, 1, 2)), ("w2", "d", "e", date(2026, 1, 3))],
    [("w1", "ü,\"{}\\", "NULL", date(2026, 1, 2))],
    [],
])
async def test_the_rows_come_back_as_given(engine: AsyncEngine,
                                           rows: list[tuple[object, ...]]) -> None:
    exprs, args = unnest_args(1, columns(rows, 4), ["text", "text", "text", "date"])
    async with engine.connect() as conn:
        got = await fetch(conn, f"SELECT * FROM unnest({exprs})", *args)
    assert [tuple(r) for r in got] == rows


def test_a_column_is_joined_only_when_it_can_be_split_back() -> None:
    exprs, args = unnest_args(3, [["a", "b"], ["", "c"], [""], ["x", None], [f"{SEP}"],
                                  [1.5]], ["text", "text", "text", "text", "text", "float8"])
    assert exprs == ("string_to_array($3, chr(31)), string_to_array($4, chr(31)), "
                     "$5::text[], $6::text[], $7::text[], $8::float8[]")
    assert args[:2] == [f"a{SEP}b", f"{SEP}c"]
