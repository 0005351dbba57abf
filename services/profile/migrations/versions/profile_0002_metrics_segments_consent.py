"""metrics, consent, addresses, scores; tombstones, workspace settings, segments

Revision ID: profile_0002
Revises: profile_0001
Create Date: 2026-11-25 03:40:00
"""
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = 'profile_0002'
down_revision: str | None = 'profile_0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = 'profile'
JSONB = postgresql.JSONB(astext_type=sa.Text())
TS = sa.DateTime(timezone=True)


def add(name: str, type_: Any, **kw: Any) -> None:
    op.add_column('profiles', sa.Column(name, type_, **kw), schema=S)


def upgrade() -> None:
    add('trait_seen', JSONB, server_default='{}', nullable=False)
    add('order_count', sa.Integer(), server_default='0', nullable=False)
    add('gross_revenue', sa.Float(), server_default='0', nullable=False)
    add('refund_count', sa.Integer(), server_default='0', nullable=False)
    add('refunded', sa.Float(), server_default='0', nullable=False)
    for name in ('first_order_at', 'last_order_at', 'reactivated_at', 'last_open_at',
                 'last_click_at'):
        add(name, TS, nullable=True)
    add('nps_score', sa.SmallInteger(), nullable=True)
    add('nps_at', TS, nullable=True)
    for name in ('consent', 'addresses', 'push_tokens'):
        add(name, JSONB, server_default='{}', nullable=False)
    add('lifecycle_stage', sa.String(length=20), nullable=True)
    add('rfm', JSONB, server_default='{}', nullable=False)
    add('rfm_segment', sa.String(length=40), nullable=True)
    add('predictions', JSONB, server_default='{}', nullable=False)
    # Every event rewrites its profile row: leave room on each page so most updates are HOT
    # (no index writes when no indexed column changed).
    op.execute("ALTER TABLE profile.profiles SET (fillfactor = 80)")
    op.create_index('profiles_ws_stage', 'profiles', ['workspace_id', 'lifecycle_stage'], schema=S)
    op.create_index('profiles_ws_rfm', 'profiles', ['workspace_id', 'rfm_segment'], schema=S)
    op.create_index('profiles_ws_last_order', 'profiles', ['workspace_id', 'last_order_at'],
                    schema=S)
    # Profiles made before 0002 resolve by their own id too (merged-away ids keep resolving).
    op.execute("INSERT INTO profile.identities (workspace_id, kind, value, profile_id) "
               "SELECT workspace_id, 'profile_id', id, id FROM profile.profiles "
               "ON CONFLICT DO NOTHING")
    op.create_table('tombstones',
        sa.Column('workspace_id', sa.String(length=64), nullable=False),
        sa.Column('identifier_hash', sa.String(length=64), nullable=False),
        sa.Column('erased_at', TS, server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('workspace_id', 'identifier_hash'), schema=S)
    op.create_table('workspace_settings',
        sa.Column('workspace_id', sa.String(length=64), nullable=False),
        sa.Column('conventions', JSONB, server_default='{}', nullable=False),
        sa.Column('model', JSONB, server_default='{}', nullable=False),
        sa.Column('recomputed_at', TS, nullable=True),
        sa.Column('updated_at', TS, server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('workspace_id'), schema=S)
    op.create_table('segments',
        sa.Column('workspace_id', sa.String(length=64), nullable=False),
        sa.Column('key', sa.String(length=100), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('description', sa.Text(), server_default='', nullable=False),
        sa.Column('rule', JSONB, nullable=False),
        sa.Column('created_at', TS, server_default=sa.text('now()'), nullable=False),
        sa.Column('updated_at', TS, server_default=sa.text('now()'), nullable=False),
        sa.Column('computed_at', TS, nullable=True),
        sa.PrimaryKeyConstraint('workspace_id', 'key'), schema=S)
    op.create_table('segment_members',
        sa.Column('workspace_id', sa.String(length=64), nullable=False),
        sa.Column('segment_key', sa.String(length=100), nullable=False),
        sa.Column('profile_id', sa.String(length=36), nullable=False),
        sa.Column('entered_at', TS, server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('workspace_id', 'segment_key', 'profile_id'), schema=S)
    op.create_index('segment_members_profile', 'segment_members', ['profile_id'], schema=S)


def downgrade() -> None:
    op.drop_index('segment_members_profile', table_name='segment_members', schema=S)
    for table in ('segment_members', 'segments', 'workspace_settings', 'tombstones'):
        op.drop_table(table, schema=S)
    op.execute("DELETE FROM profile.identities WHERE kind = 'profile_id'")
    op.execute("ALTER TABLE profile.profiles RESET (fillfactor)")
    for index in ('profiles_ws_last_order', 'profiles_ws_rfm', 'profiles_ws_stage'):
        op.drop_index(index, table_name='profiles', schema=S)
    for name in ('predictions', 'rfm_segment', 'rfm', 'lifecycle_stage', 'push_tokens',
                 'addresses', 'consent', 'nps_at', 'nps_score', 'last_click_at', 'last_open_at',
                 'reactivated_at', 'last_order_at', 'first_order_at', 'refunded', 'refund_count',
                 'gross_revenue', 'order_count', 'trait_seen'):
        op.drop_column('profiles', name, schema=S)
