"""messageId dedupe: message_ids and acked_claims

Revision ID: ingest_0002
Revises: ingest_0001
Create Date: 2026-11-25 03:50:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = 'ingest_0002'
down_revision: str | None = 'ingest_0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('message_ids',
    sa.Column('workspace_id', sa.String(length=64), nullable=False),
    sa.Column('message_id', sa.String(length=200), nullable=False),
    sa.Column('claim', postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'message_id'),
    schema='ingest'
    )
    op.create_index('message_ids_claimed_at', 'message_ids', ['claimed_at'], unique=False, schema='ingest', postgresql_using='brin')
    op.create_table('acked_claims',
    sa.Column('claim', postgresql.UUID(as_uuid=True), nullable=False),
    sa.Column('acked_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('claim'),
    schema='ingest'
    )
    op.create_index('acked_claims_acked_at', 'acked_claims', ['acked_at'], unique=False, schema='ingest', postgresql_using='brin')


def downgrade() -> None:
    op.drop_index('acked_claims_acked_at', table_name='acked_claims', schema='ingest', postgresql_using='brin')
    op.drop_table('acked_claims', schema='ingest')
    op.drop_index('message_ids_claimed_at', table_name='message_ids', schema='ingest', postgresql_using='brin')
    op.drop_table('message_ids', schema='ingest')
