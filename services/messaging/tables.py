"""Messaging's tables, in schema `messaging`."""

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

from shared.auth import api_keys_table
from shared.db import outbox_table

metadata = MetaData(schema="messaging")
api_keys = api_keys_table(metadata)
outbox = outbox_table(metadata)

templates = Table(
    "templates",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("key", String(200), nullable=False),
    Column("channel", String(20), nullable=False),
    Column("subject", Text),
    Column("html", Text),
    Column("text", Text),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    PrimaryKeyConstraint("workspace_id", "key"),
)

# The message log. The unique idempotency key is what makes a redelivered command a no-op.
messages = Table(
    "messages",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("idempotency_key", String(200), nullable=False),
    Column("profile_id", String(36), nullable=False),
    Column("channel", String(20), nullable=False),
    Column("template", String(200), nullable=False),
    Column("status", String(20), nullable=False),  # sending | sent | failed | suppressed
    Column("recipient", String(320)),
    Column("subject", Text),
    Column("body", Text),
    Column("error", Text),
    Column("journey", JSONB),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    UniqueConstraint("workspace_id", "idempotency_key", name="messages_idempotency"),
    Index("messages_profile", "workspace_id", "profile_id", "created_at"),
)
