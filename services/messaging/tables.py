"""Messaging's tables, in schema `messaging`."""

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from shared.auth import api_keys_table
from shared.db import inbox_table, outbox_table

metadata = MetaData(schema="messaging")
api_keys = api_keys_table(metadata)
outbox = outbox_table(metadata)
inbox = inbox_table(metadata)

templates = Table(
    "templates",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("key", String(200), nullable=False),
    Column("channel", String(20), nullable=False),
    Column("subject", Text),
    Column("html", Text),
    Column("text", Text),
    # marketing sends obey unsubscribes; transactional ones (receipts, resets) only bounces.
    Column("category", String(20), nullable=False, server_default="marketing"),
    Column("topic", String(100)),  # subscription topic: consent `topic:<key>` is checked too
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    # undefined variables fail the render (templates saved before lax became the default)
    Column("strict", Boolean, nullable=False, server_default="false"),
    Column("version", Integer, nullable=False, server_default="1"),  # the latest save's
    PrimaryKeyConstraint("workspace_id", "key"),
)

# Every save of a template, immutable: sends record the version they rendered.
template_versions = Table(
    "template_versions",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("key", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("channel", String(20), nullable=False),
    Column("subject", Text),
    Column("html", Text),
    Column("text", Text),
    Column("category", String(20), nullable=False),
    Column("topic", String(100)),
    Column("strict", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    PrimaryKeyConstraint("workspace_id", "key", "version"),
)

# Liquid partials: `{% render 'footer' %}` reads the workspace's snippet `footer`.
snippets = Table(
    "snippets",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("source", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    PrimaryKeyConstraint("workspace_id", "name"),
)

# Discount code pools, and their codes. A code's profile_id is its assignment: at most one
# code per (customer, pool), and a code is free while profile_id is null.
code_pools = Table(
    "code_pools",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("key", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    PrimaryKeyConstraint("workspace_id", "key"),
)

codes = Table(
    "codes",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("pool", String(200), nullable=False),
    Column("code", String(200), nullable=False),
    Column("profile_id", String(36)),
    Column("message_id", String(36)),  # the message that handed it out
    Column("assigned_at", DateTime(timezone=True)),
    PrimaryKeyConstraint("workspace_id", "pool", "code"),
    UniqueConstraint("workspace_id", "pool", "profile_id", name="codes_one_per_customer"),
    Index("codes_free", "workspace_id", "pool", postgresql_where="profile_id IS NULL"),
)

# Provider configuration per workspace and channel. `secrets` is a Fernet token (encrypted
# JSON); it is never returned by the API.
channels = Table(
    "channels",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("channel", String(20), nullable=False),
    Column("provider", String(20), nullable=False),
    Column("settings", JSONB, nullable=False),
    Column("secrets", LargeBinary, nullable=False),
    Column("secret_hints", JSONB, nullable=False),  # last 4 characters of each secret
    Column("rate_per_second", Float),
    Column("allow_private_targets", Boolean, nullable=False, server_default="false"),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    PrimaryKeyConstraint("workspace_id", "channel", "provider"),
)

# Messaging's own durable copy of consent, checked at send time. `scope` is a channel
# (`email`, `sms`, `push`) or `topic:<key>`.
consents = Table(
    "consents",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("profile_id", String(36), nullable=False),
    Column("scope", String(120), nullable=False),
    Column("subscribed", Boolean, nullable=False),
    Column("source", String(100), nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("workspace_id", "profile_id", "scope"),
)

# Profiles merged into another (from profile-changes `merged`): a consent change that
# arrives for the old id after the merge (another partition) still reaches the survivor.
profile_aliases = Table(
    "profile_aliases",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("profile_id", String(36), nullable=False),
    Column("merged_into", String(36), nullable=False),
    PrimaryKeyConstraint("workspace_id", "profile_id"),
)

# Addresses that must not be sent to (hard bounce, invalid push token, provider opt-out).
# Keyed by a SHA-256 of the address, so the list holds no personal data and survives erasure.
undeliverable = Table(
    "undeliverable",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("channel", String(20), nullable=False),
    Column("address_hash", String(64), nullable=False),
    Column("reason", String(300), nullable=False),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    PrimaryKeyConstraint("workspace_id", "channel", "address_hash"),
)

# Provider rate limits shared by every replica: one token bucket per channel provider.
rate_buckets = Table(
    "rate_buckets",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("channel", String(20), nullable=False),
    Column("provider", String(20), nullable=False),
    Column("tokens", Float, nullable=False),
    Column("stamp", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("workspace_id", "channel", "provider"),
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
    Column("template_version", Integer),
    # queued -> sending -> sent -> delivered | bounced; or failed | suppressed | expired;
    # sending -> retrying -> sending (transient provider failure); sending -> unknown (a
    # crash during the provider call: resendable by an operator)
    Column("status", String(20), nullable=False),
    Column("recipient", Text),
    Column("subject", Text),
    Column("body", Text),
    Column("content", JSONB),  # rendered parts, for support; dropped on erasure
    Column("error", Text),
    Column("journey", JSONB),
    Column("journey_key", String(200)),
    Column("provider", String(20)),
    Column("provider_message_id", String(300)),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("sent_at", DateTime(timezone=True)),
    Column("delivered_at", DateTime(timezone=True)),
    Column("opened_at", DateTime(timezone=True)),
    Column("clicked_at", DateTime(timezone=True)),
    Column("erased_at", DateTime(timezone=True)),
    Column("retry_at", DateTime(timezone=True)),  # retrying: when; sweeper's claim: lease end
    Column("retry_since", DateTime(timezone=True)),  # first transient failure (or resend)
    Column("command", JSONB),  # the send command, while it may still be (re)sent
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    UniqueConstraint("workspace_id", "idempotency_key", name="messages_idempotency"),
    Index("messages_profile", "workspace_id", "profile_id", "created_at"),
    Index("messages_journey", "workspace_id", "journey_key", "created_at"),
    Index("messages_status", "workspace_id", "status", "created_at"),
    Index("messages_provider_id", "provider", "provider_message_id"),
    Index("messages_retry_due", "retry_at",
          postgresql_where=text("status IN ('retrying', 'sending')")),
)
