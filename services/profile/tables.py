"""Profile's tables, in schema `profile`."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

from shared.auth import api_keys_table
from shared.db import inbox_table, outbox_table

metadata = MetaData(schema="profile")
api_keys = api_keys_table(metadata)
inbox = inbox_table(metadata)
outbox = outbox_table(metadata)

# fillfactor 80 (set in profile_0002): each event rewrites its row; room on the page keeps
# most of those updates HOT.
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
    # 0002: per-trait first/last seen, computed metrics, consent, addresses, scores.
    Column("trait_seen", JSONB, nullable=False, server_default="{}"),
    Column("order_count", Integer, nullable=False, server_default="0"),
    Column("gross_revenue", Float, nullable=False, server_default="0"),
    Column("refund_count", Integer, nullable=False, server_default="0"),
    Column("refunded", Float, nullable=False, server_default="0"),
    Column("first_order_at", DateTime(timezone=True)),
    Column("last_order_at", DateTime(timezone=True)),
    Column("reactivated_at", DateTime(timezone=True)),
    Column("last_open_at", DateTime(timezone=True)),
    Column("last_click_at", DateTime(timezone=True)),
    Column("nps_score", SmallInteger),
    Column("nps_at", DateTime(timezone=True)),
    Column("consent", JSONB, nullable=False, server_default="{}"),
    Column("addresses", JSONB, nullable=False, server_default="{}"),
    Column("push_tokens", JSONB, nullable=False, server_default="{}"),
    Column("lifecycle_stage", String(20)),
    Column("rfm", JSONB, nullable=False, server_default="{}"),
    Column("rfm_segment", String(40)),
    Column("predictions", JSONB, nullable=False, server_default="{}"),
    Column("codes", JSONB, nullable=False, server_default="{}"),  # discount code per pool
    Index("profiles_ws_user", "workspace_id", "user_id"),
    Index("profiles_ws_stage", "workspace_id", "lifecycle_stage"),
    Index("profiles_ws_rfm", "workspace_id", "rfm_segment"),
    Index("profiles_ws_last_order", "workspace_id", "last_order_at"),
)

# Every identifier that resolves to a profile: user_id, anonymous_id, email, phone, and the
# profile's own id (kind `profile_id`), so ids of merged-away profiles still resolve.
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

# Erased people: sha256 of each identifier they had, so late events don't re-create them.
tombstones = Table(
    "tombstones",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("identifier_hash", String(64), nullable=False),
    Column("erased_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    PrimaryKeyConstraint("workspace_id", "identifier_hash"),
)

# Per workspace: metric conventions and the last BG/NBD + Gamma-Gamma fit.
workspace_settings = Table(
    "workspace_settings",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("conventions", JSONB, nullable=False, server_default="{}"),
    Column("model", JSONB, nullable=False, server_default="{}"),
    Column("recomputed_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
)

segments = Table(
    "segments",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("key", String(100), nullable=False),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("rule", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    # Set once membership was computed over the whole workspace for this version of the rule;
    # null means the scheduled pass still has to finish it.
    Column("computed_at", DateTime(timezone=True)),
    # 0004: facts of members are also counted per segment in the KPI rollups.
    Column("reporting", Boolean, nullable=False, server_default="false"),
    PrimaryKeyConstraint("workspace_id", "key"),
)

segment_members = Table(
    "segment_members",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("segment_key", String(100), nullable=False),
    Column("profile_id", String(36), nullable=False),
    Column("entered_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    PrimaryKeyConstraint("workspace_id", "segment_key", "profile_id"),
    Index("segment_members_profile", "profile_id"),
)
