"""Journey's tables, in schema `journey`."""

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

from shared.auth import api_keys_table
from shared.db import inbox_table, outbox_table

metadata = MetaData(schema="journey")
api_keys = api_keys_table(metadata)
inbox = inbox_table(metadata)
outbox = outbox_table(metadata)

journeys = Table(
    "journeys",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("key", String(100), nullable=False),
    Column("name", String(200), nullable=False),
    Column("status", String(20), nullable=False),  # draft | published | paused | archived
    Column("draft", JSONB),
    Column("published_version", Integer),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    PrimaryKeyConstraint("workspace_id", "key"),
)

# Published versions are immutable: customers finish on the version they entered.
journey_versions = Table(
    "journey_versions",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("key", String(100), nullable=False),
    Column("version", Integer, nullable=False),
    Column("document", JSONB, nullable=False),
    Column("published_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    PrimaryKeyConstraint("workspace_id", "key", "version"),
)

# One row per (journey version, customer, instance key, entry).
instances = Table(
    "instances",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("journey_key", String(100), nullable=False),
    Column("version", Integer, nullable=False),
    Column("profile_id", String(36), nullable=False),
    Column("instance_key", String(255), nullable=False, server_default=""),
    Column("entry_id", String(300), nullable=False),
    Column("stage", String(100), nullable=False),
    Column("step", String(100)),
    Column("status", String(20), nullable=False),  # active | completed | exited
    Column("exit_reason", String(200)),
    Column("entered_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    UniqueConstraint("workspace_id", "journey_key", "profile_id", "entry_id", "stage",
                     name="instances_entry_once"),
    Index("instances_profile", "workspace_id", "profile_id"),
    Index("instances_journey_stage", "workspace_id", "journey_key", "status", "stage"),
)
