"""Journey's tables, in schema `journey`."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

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

# One row per (journey version, customer, instance key) run; at most one active per
# (journey, customer, instance key). `wake_at` is the instance's durable timer: the timer
# worker claims due rows FOR UPDATE SKIP LOCKED and moves them in the same transaction.
instances = Table(
    "instances",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("journey_key", String(100), nullable=False),
    Column("version", Integer, nullable=False),
    Column("profile_id", String(36), nullable=False),
    Column("instance_key", String(255), nullable=False, server_default=""),
    Column("entry_id", String(300), nullable=False),
    Column("stage", String(100), nullable=False),
    Column("step", String(100)),
    Column("status", String(20), nullable=False),  # active | completed | exited
    Column("holdout", Boolean, nullable=False, server_default=false()),
    Column("epoch", Integer, nullable=False, server_default="0"),
    Column("seq", Integer, nullable=False, server_default="0"),
    Column("wake_at", DateTime(timezone=True)),
    Column("wake_kind", String(20)),
    Column("entered_at", DateTime(timezone=True), nullable=False),
    Column("stage_entered_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    Column("exit_reason", String(200)),
    Column("goal_at", DateTime(timezone=True)),
    Column("goal_until", DateTime(timezone=True)),
    Column("context", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    Index("instances_one_active", "workspace_id", "journey_key", "profile_id", "instance_key",
          unique=True, postgresql_where=text("status = 'active'")),
    Index("instances_profile", "workspace_id", "profile_id", "journey_key", "instance_key",
          "entered_at"),
    Index("instances_journey_stage", "workspace_id", "journey_key", "status", "stage"),
    # The timer claim's index: both of its conditions in the predicate, in wake_at order,
    # so a claim reads only the rows it takes however many customers wait (journey_0003).
    Index("instances_timers", "wake_at",
          postgresql_where=text("status = 'active' AND wake_at IS NOT NULL")),
)

# The "why?" trace: every decision the engine made about a customer, in order.
decisions = Table(
    "decisions",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("profile_id", String(36), nullable=False),
    Column("journey_key", String(100), nullable=False),
    Column("version", Integer, nullable=False),
    Column("instance_id", String(36)),
    Column("instance_key", String(255), nullable=False, server_default=""),
    Column("stage", String(100)),
    Column("step", String(100)),
    Column("kind", String(20), nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("reason", String(300)),
    Column("detail", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("decisions_profile", "workspace_id", "profile_id", "journey_key", "id"),
    Index("decisions_journey", "workspace_id", "journey_key", "kind", "outcome"),
)

# Every send journey asked for, across journeys: what frequency caps count.
sends = Table(
    "sends",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("idempotency_key", String(64), nullable=False),
    Column("profile_id", String(36), nullable=False),
    Column("channel", String(20), nullable=False),
    Column("journey_key", String(100), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=False),
    Column("topic", String(100)),  # the template's subscription topic (policy caps)
    Column("category", String(20)),  # marketing | transactional (transactional: not counted)
    PrimaryKeyConstraint("workspace_id", "idempotency_key"),
    Index("sends_profile", "workspace_id", "profile_id", "sent_at"),
    # BRIN: nearly free to maintain; serves the retention pass (services/journey/retention.py).
    Index("sends_sent_at", "sent_at", postgresql_using="brin"),
)

# The latest profile snapshot journey saw, so timers evaluate conditions on fresh data
# without calling the profile service.
snapshots = Table(
    "snapshots",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("profile_id", String(36), nullable=False),
    Column("snapshot", JSONB, nullable=False),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    # Segment keys of the snapshot, GIN-indexed: a broadcast's audience is one query.
    Column("segments", ARRAY(Text), nullable=False, server_default="{}"),
    # Global control group: decided when journey first sees the profile, never changed.
    Column("control", Boolean, nullable=False, server_default=false()),
    PrimaryKeyConstraint("workspace_id", "profile_id"),
    Index("snapshots_segments", "segments", postgresql_using="gin"),
    # The control group's members (journey_0006): the stats exclude them as one small set.
    Index("snapshots_control", "workspace_id", "profile_id", postgresql_where=text("control")),
)

# One contact policy per workspace (services/journey/domain/policy.py); `salt` keys the
# control group hash; `tick_at` paces the workspace's broadcasts (max_per_second).
policies = Table(
    "policies",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("document", JSONB, nullable=False),
    Column("salt", String(64), nullable=False),
    Column("tick_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
)

# What messaging said a template is (channel, category, topic), fetched over HTTP when a
# journey or broadcast naming it is saved; read by the send path (never messaging's tables).
templates_seen = Table(
    "templates_seen",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("key", String(200), nullable=False),
    Column("channel", String(20), nullable=False),
    Column("category", String(20), nullable=False),
    Column("topic", String(100)),
    Column("fetched_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    PrimaryKeyConstraint("workspace_id", "key"),
)

# Broadcasts: draft -> scheduled -> sending -> sent, or cancelled (services/journey/broadcasts).
broadcasts = Table(
    "broadcasts",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("key", String(120), nullable=False),
    Column("document", JSONB, nullable=False),
    Column("status", String(20), nullable=False),
    Column("start_at", DateTime(timezone=True)),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("tick_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    PrimaryKeyConstraint("workspace_id", "key"),
    Index("broadcasts_due", "status", "start_at",
          postgresql_where=text("status IN ('scheduled', 'sending')")),
)

# A broadcast's audience, frozen when sending starts; one row per recipient: pending (with
# its due time: send_at, or local_time in the customer's zone, or a deferral), sent,
# suppressed, held or expired. The worker claims due rows FOR UPDATE SKIP LOCKED.
broadcast_audience = Table(
    "broadcast_audience",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("broadcast_key", String(120), nullable=False),
    Column("profile_id", String(36), nullable=False),
    Column("status", String(20), nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("held_since", DateTime(timezone=True)),
    Column("reason", String(300)),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    PrimaryKeyConstraint("workspace_id", "broadcast_key", "profile_id"),
    Index("broadcast_audience_due", "workspace_id", "broadcast_key", "due_at",
          postgresql_where=text("status = 'pending'")),
)
