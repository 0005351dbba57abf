"""Alembic env for the profile service (schema `profile`)."""

from services.profile.tables import metadata
from shared.db.alembic_env import run_migrations

run_migrations(metadata)
