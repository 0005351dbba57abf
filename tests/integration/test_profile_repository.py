"""Profile's asyncpg shortcuts run inside the caller's SQLAlchemy transaction."""

from __future__ import annotations

from sqlalchemy import text

from services.profile import repository as repo
from shared.db import create_engine
from shared.settings import Settings


async def test_a_driver_statement_first_in_a_transaction_is_inside_it(settings: Settings) -> None:
    # SQLAlchemy sends BEGIN with its first statement; a statement sent to asyncpg before
    # that would autocommit (a FOR UPDATE lock released at once).
    engine = create_engine(settings.database_url)
    try:
        async with engine.begin() as conn:
            first = (await repo.fetch(conn, "SELECT pg_current_xact_id()::text"))[0][0]
            second = (await conn.execute(text("SELECT pg_current_xact_id()::text"))).scalar()
        assert first == second
    finally:
        await engine.dispose()
