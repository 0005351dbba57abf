"""control-group members index: the stats' control exclusion without a lookup per instance

Journey stats (and `GET /v1/journeys?include=goal`, which profile's KPIs read) leave the
global control group out of both arms. As a correlated NOT EXISTS on snapshots it cost one
index probe per instance of the journey (200,000 for the list at 100,000 customers). A
partial index over the control members lets the stats first ask whether the workspace has
any (usually none, or a few per cent) and exclude them as one small hashed set.

Revision ID: journey_0006
Revises: journey_0005
Create Date: 2026-12-05 00:10:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'journey_0006'
down_revision: str | None = 'journey_0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('snapshots_control', 'snapshots', ['workspace_id', 'profile_id'],
                    unique=False, schema='journey', postgresql_where=sa.text('control'))


def downgrade() -> None:
    op.drop_index('snapshots_control', table_name='snapshots', schema='journey',
                  postgresql_where=sa.text('control'))
