"""retention: BRIN on inbox.processed_at and sends.sent_at

The retention worker (services/journey/retention.py, shared/db/retention.py) deletes
inbox and sends rows older than their windows in chunks of 5000. BRIN finds them at
almost no cost on the hot path's inserts (a btree would add a second index entry per
applied message and per send). Decisions are pruned by walking their primary key.

Revision ID: journey_0004
Revises: journey_0003
Create Date: 2026-11-25 08:00:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = 'journey_0004'
down_revision: str | None = 'journey_0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('inbox_processed_at', 'inbox', ['processed_at'], unique=False,
                    schema='journey', postgresql_using='brin')
    op.create_index('sends_sent_at', 'sends', ['sent_at'], unique=False, schema='journey',
                    postgresql_using='brin')


def downgrade() -> None:
    op.drop_index('sends_sent_at', table_name='sends', schema='journey')
    op.drop_index('inbox_processed_at', table_name='inbox', schema='journey')
