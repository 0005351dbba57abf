"""durable retries: retry_at, retry_since and the kept command on messages; rate buckets

`rate_buckets` holds one token bucket per (workspace, channel, provider) with a rate limit,
shared by every replica (one UPDATE per send on a rate-limited channel).

A transient provider failure leaves the message `retrying` with `retry_at`; the retry
sweeper claims due ones (partial index below, FOR UPDATE SKIP LOCKED). `command` keeps the
send command while the message may still be sent (retrying) or resent by an operator
(failed, unknown); it is cleared once the message is finished.

Revision ID: messaging_0005
Revises: messaging_0004
Create Date: 2026-12-04 20:40:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = 'messaging_0005'
down_revision: str | None = 'messaging_0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('messages', sa.Column('retry_at', sa.DateTime(timezone=True)),
                  schema='messaging')
    op.add_column('messages', sa.Column('retry_since', sa.DateTime(timezone=True)),
                  schema='messaging')
    op.add_column('messages', sa.Column('command', postgresql.JSONB()), schema='messaging')
    op.create_index('messages_retry_due', 'messages', ['retry_at'], unique=False,
                    schema='messaging',
                    postgresql_where=sa.text("status IN ('retrying', 'sending')"))
    op.create_table('rate_buckets',
                    sa.Column('workspace_id', sa.String(64), nullable=False),
                    sa.Column('channel', sa.String(20), nullable=False),
                    sa.Column('provider', sa.String(20), nullable=False),
                    sa.Column('tokens', sa.Float(), nullable=False),
                    sa.Column('stamp', sa.DateTime(timezone=True), nullable=False),
                    sa.PrimaryKeyConstraint('workspace_id', 'channel', 'provider'),
                    schema='messaging')


def downgrade() -> None:
    op.drop_table('rate_buckets', schema='messaging')
    op.drop_index('messages_retry_due', table_name='messages', schema='messaging')
    for column in ('command', 'retry_since', 'retry_at'):
        op.drop_column('messages', column, schema='messaging')
