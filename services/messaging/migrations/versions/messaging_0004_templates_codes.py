"""templates as marketers write them: strict flag, versions, snippets, discount codes

Templates saved before this revision keep strict undefined variables (strict = true on
existing rows); new ones default to lax. Every save makes an immutable row in
template_versions; the message log records the version it rendered. Code pools hold
discount codes; a code's profile_id is its assignment (one per customer and pool).

Revision ID: messaging_0004
Revises: messaging_0003
Create Date: 2026-12-04 21:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'messaging_0004'
down_revision: str | None = 'messaging_0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
S = 'messaging'


def upgrade() -> None:
    op.add_column('templates', sa.Column('strict', sa.Boolean(), nullable=False,
                                         server_default=sa.true()), schema=S)
    op.alter_column('templates', 'strict', server_default=sa.false(), schema=S)
    op.add_column('templates', sa.Column('version', sa.Integer(), nullable=False,
                                         server_default='1'), schema=S)
    op.create_table(
        'template_versions',
        sa.Column('workspace_id', sa.String(64), nullable=False),
        sa.Column('key', sa.String(200), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('channel', sa.String(20), nullable=False),
        sa.Column('subject', sa.Text()),
        sa.Column('html', sa.Text()),
        sa.Column('text', sa.Text()),
        sa.Column('category', sa.String(20), nullable=False),
        sa.Column('topic', sa.String(100)),
        sa.Column('strict', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.PrimaryKeyConstraint('workspace_id', 'key', 'version'),
        schema=S)
    op.execute(f"INSERT INTO {S}.template_versions (workspace_id, key, version, channel, "
               "subject, html, text, category, topic, strict, created_at) "
               "SELECT workspace_id, key, 1, channel, subject, html, text, category, topic, "
               f"strict, updated_at FROM {S}.templates")
    op.add_column('messages', sa.Column('template_version', sa.Integer()), schema=S)
    op.create_table(
        'snippets',
        sa.Column('workspace_id', sa.String(64), nullable=False),
        sa.Column('name', sa.String(200), nullable=False),
        sa.Column('source', sa.Text(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.PrimaryKeyConstraint('workspace_id', 'name'),
        schema=S)
    op.create_table(
        'code_pools',
        sa.Column('workspace_id', sa.String(64), nullable=False),
        sa.Column('key', sa.String(200), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.PrimaryKeyConstraint('workspace_id', 'key'),
        schema=S)
    op.create_table(
        'codes',
        sa.Column('workspace_id', sa.String(64), nullable=False),
        sa.Column('pool', sa.String(200), nullable=False),
        sa.Column('code', sa.String(200), nullable=False),
        sa.Column('profile_id', sa.String(36)),
        sa.Column('message_id', sa.String(36)),
        sa.Column('assigned_at', sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint('workspace_id', 'pool', 'code'),
        sa.UniqueConstraint('workspace_id', 'pool', 'profile_id', name='codes_one_per_customer'),
        schema=S)
    op.create_index('codes_free', 'codes', ['workspace_id', 'pool'], schema=S,
                    postgresql_where=sa.text('profile_id IS NULL'))


def downgrade() -> None:
    op.drop_index('codes_free', table_name='codes', schema=S)
    op.drop_table('codes', schema=S)
    op.drop_table('code_pools', schema=S)
    op.drop_table('snippets', schema=S)
    op.drop_column('messages', 'template_version', schema=S)
    op.drop_table('template_versions', schema=S)
    op.drop_column('templates', 'version', schema=S)
    op.drop_column('templates', 'strict', schema=S)
