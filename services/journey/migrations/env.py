"""Alembic env for the journey service (schema `journey`)."""

from services.journey.tables import metadata
from shared.db.alembic_env import run_migrations

run_migrations(metadata)
