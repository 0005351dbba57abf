"""Ingest's tables, in schema `ingest`."""

from sqlalchemy import Column, DateTime, Index, MetaData, PrimaryKeyConstraint, String, Table, func
from sqlalchemy.dialects.postgresql import UUID

from shared.auth import api_keys_table

metadata = MetaData(schema="ingest")
api_keys = api_keys_table(metadata)

# One row per accepted `messageId`, per workspace, for the dedupe window. `claim` is the
# token of the request that published it; the message counts as accepted once that token
# is in `acked_claims` (see services/ingest/dedupe.py for the protocol).
message_ids = Table(
    "message_ids",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("message_id", String(200), nullable=False),
    Column("claim", UUID(as_uuid=True), nullable=False),
    Column("claimed_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("workspace_id", "message_id"),
    # BRIN: nearly free to maintain on an append-mostly table; serves the retention purge.
    Index("message_ids_claimed_at", "claimed_at", postgresql_using="brin"),
)

# Requests whose events the broker acknowledged (one row per request, not per event).
acked_claims = Table(
    "acked_claims",
    metadata,
    Column("claim", UUID(as_uuid=True), primary_key=True),
    Column("acked_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    Index("acked_claims_acked_at", "acked_at", postgresql_using="brin"),
)
