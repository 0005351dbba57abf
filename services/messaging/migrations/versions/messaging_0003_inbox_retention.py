"""inbox retention: BRIN on inbox.processed_at

The retention worker (shared/db/retention.py) deletes inbox rows older than the window
in chunks of 5000. BRIN finds them at almost no cost on the hot path's inserts (a btree
would add a second index entry per applied message).

Revision ID: messaging_0003
Revises: messaging_0002
Create Date: 2026-11-25 08:00:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = 'messaging_0003'
down_revision: str | None = 'messaging_0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('inbox_processed_at', 'inbox', ['processed_at'], unique=False,
                    schema='messaging', postgresql_using='brin')


def downgrade() -> None:
    op.drop_index('inbox_processed_at', table_name='inbox', schema='messaging')
