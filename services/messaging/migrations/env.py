"""Alembic env for the messaging service (schema `messaging`)."""

from services.messaging.tables import metadata
from shared.db.alembic_env import run_migrations

run_migrations(metadata)
