"""profile codes: the discount code a customer was sent, per code pool

Kept from messaging's `sent` delivery events (`codes: {pool: code}`), shown in the
snapshot as `codes` (templates: `profile.codes.<pool>`).

Revision ID: profile_0004
Revises: profile_0003
Create Date: 2026-12-04 21:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = 'profile_0004'
down_revision: str | None = 'profile_0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('profiles', sa.Column('codes', JSONB(), nullable=False,
                                        server_default='{}'), schema='profile')


def downgrade() -> None:
    op.drop_column('profiles', 'codes', schema='profile')
