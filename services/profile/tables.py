"""Profile's tables, in schema `profile`."""

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

from shared.auth import api_keys_table
from shared.db import inbox_table, outbox_table

metadata = MetaData(schema="profile")
api_keys = api_keys_table(metadata)
inbox = inbox_table(metadata)
outbox = outbox_table(metadata)

profiles = Table(
    "profiles",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("user_id", String(255)),
    Column("email", String(320)),
    Column("phone", String(32)),
    Column("timezone", String(64)),
    Column("traits", JSONB, nullable=False, server_default="{}"),
    Column("event_count", BigInteger, nullable=False, server_default="0"),
    Column("first_seen_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    Index("profiles_ws_user", "workspace_id", "user_id"),
)

# Every identifier that resolves to a profile: user_id, anonymous_id, email, phone.
identities = Table(
    "identities",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("value", String(320), nullable=False),
    Column("profile_id", String(36), nullable=False),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    PrimaryKeyConstraint("workspace_id", "kind", "value"),
    Index("identities_profile", "profile_id"),
)

events = Table(
    "events",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("event_id", String(200), nullable=False),
    Column("profile_id", String(36), nullable=False),
    Column("type", String(20), nullable=False),
    Column("name", String(200)),
    Column("properties", JSONB, nullable=False, server_default="{}"),
    Column("timestamp", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("workspace_id", "event_id"),
    Index("events_profile_time", "profile_id", "timestamp"),
)
