"""campaigns: contact policy, broadcasts, control group, segment membership on snapshots

- snapshots gain `segments` (text[], GIN-indexed: a broadcast's audience is one indexed
  query) and `control` (global control group membership, decided on first sight).
- sends gain `topic` and `category`, so policy caps count per subscription topic and
  transactional sends stay out of the counts; `journey_key` holds `broadcast:<key>` for
  broadcasts.
- policies (one per workspace), templates_seen (what messaging says a template is),
  broadcasts and broadcast_audience (the frozen audience, claimed FOR UPDATE SKIP LOCKED).

Revision ID: journey_0005
Revises: journey_0004
Create Date: 2026-12-04 20:45:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = 'journey_0005'
down_revision: str | None = 'journey_0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = 'journey'


def upgrade() -> None:
    op.add_column('snapshots', sa.Column('segments', postgresql.ARRAY(sa.Text()),
                                         server_default='{}', nullable=False), schema=S)
    op.add_column('snapshots', sa.Column('control', sa.Boolean(), server_default=sa.false(),
                                         nullable=False), schema=S)
    op.create_index('snapshots_segments', 'snapshots', ['segments'], schema=S,
                    postgresql_using='gin')
    op.add_column('sends', sa.Column('topic', sa.String(100)), schema=S)
    op.add_column('sends', sa.Column('category', sa.String(20)), schema=S)
    op.create_table(
        'policies',
        sa.Column('workspace_id', sa.String(64), primary_key=True),
        sa.Column('document', postgresql.JSONB(), nullable=False),
        sa.Column('salt', sa.String(64), nullable=False),
        sa.Column('tick_at', sa.DateTime(timezone=True)),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        schema=S)
    op.create_table(
        'templates_seen',
        sa.Column('workspace_id', sa.String(64), nullable=False),
        sa.Column('key', sa.String(200), nullable=False),
        sa.Column('channel', sa.String(20), nullable=False),
        sa.Column('category', sa.String(20), nullable=False),
        sa.Column('topic', sa.String(100)),
        sa.Column('fetched_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.PrimaryKeyConstraint('workspace_id', 'key'),
        schema=S)
    op.create_table(
        'broadcasts',
        sa.Column('workspace_id', sa.String(64), nullable=False),
        sa.Column('key', sa.String(120), nullable=False),
        sa.Column('document', postgresql.JSONB(), nullable=False),
        sa.Column('status', sa.String(20), nullable=False),
        sa.Column('start_at', sa.DateTime(timezone=True)),
        sa.Column('started_at', sa.DateTime(timezone=True)),
        sa.Column('finished_at', sa.DateTime(timezone=True)),
        sa.Column('tick_at', sa.DateTime(timezone=True)),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.PrimaryKeyConstraint('workspace_id', 'key'),
        schema=S)
    op.create_index('broadcasts_due', 'broadcasts', ['status', 'start_at'], schema=S,
                    postgresql_where=sa.text("status IN ('scheduled', 'sending')"))
    op.create_table(
        'broadcast_audience',
        sa.Column('workspace_id', sa.String(64), nullable=False),
        sa.Column('broadcast_key', sa.String(120), nullable=False),
        sa.Column('profile_id', sa.String(36), nullable=False),
        sa.Column('status', sa.String(20), nullable=False),
        sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('held_since', sa.DateTime(timezone=True)),
        sa.Column('reason', sa.String(300)),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.PrimaryKeyConstraint('workspace_id', 'broadcast_key', 'profile_id'),
        schema=S)
    op.create_index('broadcast_audience_due', 'broadcast_audience',
                    ['workspace_id', 'broadcast_key', 'due_at'], schema=S,
                    postgresql_where=sa.text("status = 'pending'"))


def downgrade() -> None:
    op.drop_table('broadcast_audience', schema=S)
    op.drop_table('broadcasts', schema=S)
    op.drop_table('templates_seen', schema=S)
    op.drop_table('policies', schema=S)
    op.drop_column('sends', 'category', schema=S)
    op.drop_column('sends', 'topic', schema=S)
    op.drop_index('snapshots_segments', table_name='snapshots', schema=S)
    op.drop_column('snapshots', 'control', schema=S)
    op.drop_column('snapshots', 'segments', schema=S)
