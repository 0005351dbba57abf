"""kpi_orders: the index by person leads with the profile id, not the workspace

`kpi_orders_profile` (workspace_id, profile_id, at) shared its leading column with the
primary key (workspace_id, order_key): on a table not analyzed yet the planner took it for
the consumer's probe of the batch's order keys (kpis_store.known_orders) and scanned every
order of the workspace per key, a cost that grew with the orders stored. Led by the profile
id (unique across workspaces) it still serves the per-person reads (attribution, merges,
erasure), and only the primary key can serve a probe by order key.

Revision ID: profile_0008
Revises: profile_0007
Create Date: 2026-12-05 05:00:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = 'profile_0008'
down_revision: str | None = 'profile_0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE INDEX kpi_orders_person ON profile.kpi_orders (profile_id, at)")
    op.execute("DROP INDEX profile.kpi_orders_profile")


def downgrade() -> None:
    op.execute("CREATE INDEX kpi_orders_profile ON profile.kpi_orders "
               "(workspace_id, profile_id, at)")
    op.execute("DROP INDEX profile.kpi_orders_person")
