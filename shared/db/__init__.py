"""Postgres plumbing: async engine, migrations, inbox (dedupe) and outbox (reliable publish)."""

from shared.db.engine import create_engine, ping
from shared.db.inbox import claim_new, inbox_table
from shared.db.outbox import OutboxRelay, OutboxRow, add_to_outbox, outbox_table

__all__ = [
    "OutboxRelay",
    "OutboxRow",
    "add_to_outbox",
    "claim_new",
    "create_engine",
    "inbox_table",
    "outbox_table",
    "ping",
]
