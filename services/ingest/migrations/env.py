"""Alembic env for the ingest service (schema `ingest`)."""

from services.ingest.tables import metadata
from shared.db.alembic_env import run_migrations

run_migrations(metadata)
