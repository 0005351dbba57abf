"""Create the database if needed and run every service's migrations (`touchpoint migrate`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from shared.settings import SERVICES

ROOT = Path(__file__).resolve().parents[2]


def alembic_config(service: str, database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(ROOT / "services" / service / "migrations"))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


async def ensure_database(database_url: str) -> None:
    """CREATE DATABASE when it does not exist (connects to the `postgres` database)."""
    url = make_url(database_url)
    name = url.database
    admin_dsn = url.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.DuplicateDatabaseError:
        pass
    finally:
        await conn.close()


def upgrade_all(database_url: str, services: tuple[str, ...] = SERVICES) -> None:
    """Sync on purpose: Alembic runs its own event loop per service."""
    asyncio.run(ensure_database(database_url))
    for service in services:
        command.upgrade(alembic_config(service, database_url), "head")
