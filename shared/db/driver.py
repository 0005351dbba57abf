"""asyncpg itself under a SQLAlchemy connection, for the hot paths' statements.

Services send their per-batch statements straight to asyncpg: SQLAlchemy's statement and
result handling cost more CPU than most of those statements. This is the one way to get
at the driver, so that each such statement runs in the caller's transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection


async def driver(conn: AsyncConnection) -> Any:
    """The asyncpg connection under `conn`, inside `conn`'s transaction when it has one.

    SQLAlchemy sends BEGIN lazily, with its first statement: a statement sent straight to
    the driver before that would run outside the transaction (a FOR UPDATE lock released at
    once, a write kept although the transaction rolls back). So when `conn` is in a
    transaction the driver is not yet in, BEGIN is sent here, through SQLAlchemy's own
    adapter so that its COMMIT/ROLLBACK end it: one round trip, the BEGIN the first
    statement would have cost anyway. JSONB goes through the codec the engine installed:
    written as JSON text, read decoded.
    """
    fairy = await conn.get_raw_connection()
    raw: Any = fairy.driver_connection
    if conn.in_transaction() and not raw.is_in_transaction():
        adapted: Any = fairy.dbapi_connection
        start = getattr(adapted, "_start_transaction", None)
        if start is None or getattr(adapted, "_transaction", True) is not None:
            await conn.exec_driver_sql("SELECT 1")  # another SQLAlchemy: its own way in
        else:
            async with adapted._execute_mutex:
                if adapted._transaction is None:
                    await start()
    return raw
