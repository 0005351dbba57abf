"""timer claim index: due active instances in wake_at order

The claim query (`status = 'active' AND wake_at <= now ORDER BY wake_at LIMIT n`) had
only `instances_due (wake_at) WHERE wake_at IS NOT NULL` to choose from, next to the
unique `instances_one_active ... WHERE status = 'active'`. Right after many instances
were written (before autovacuum analyzes), the planner estimated a handful of active
rows and bitmap-scanned every active instance then sorted them: each claim cost
O(customers waiting), which is why wake-ups/s fell as more customers waited. An index
whose predicate holds both conditions answers the claim in wake_at order, so a claim
reads only the rows it takes.

Revision ID: journey_0003
Revises: journey_0002
Create Date: 2026-11-25 04:45:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'journey_0003'
down_revision: str | None = 'journey_0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('instances_timers', 'instances', ['wake_at'], unique=False,
                    schema='journey',
                    postgresql_where=sa.text("status = 'active' AND wake_at IS NOT NULL"))
    op.drop_index('instances_due', table_name='instances', schema='journey',
                  postgresql_where=sa.text('wake_at IS NOT NULL'))


def downgrade() -> None:
    op.create_index('instances_due', 'instances', ['wake_at'], unique=False, schema='journey',
                    postgresql_where=sa.text('wake_at IS NOT NULL'))
    op.drop_index('instances_timers', table_name='instances', schema='journey',
                  postgresql_where=sa.text("status = 'active' AND wake_at IS NOT NULL"))
