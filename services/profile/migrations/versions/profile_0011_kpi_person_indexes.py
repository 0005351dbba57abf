"""KPI tables: an index led by the profile id on every table a merge visits

A merge moves its losers' rows (touches, orders, customer days, control membership,
numbers: kpis_store.repoint) by profile. Every index of these tables but kpi_orders_person
led with the workspace, and on the tables the connection's cached plan was made for (tiny,
never analysed) the planner scanned them whole (a hash join with the losers) or probed an
index by workspace alone: a cost that grew with the table. Led by the profile id (unique
across workspaces), these are the one index a probe by profile can use (the merge's
statement is planned with sequential scans and hash and merge joins off).

Revision ID: profile_0011
Revises: profile_0010
Create Date: 2026-12-06 04:30:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = 'profile_0011'
down_revision: str | None = 'profile_0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("kpi_customer_days", "kpi_control", "kpi_numbers")


def upgrade() -> None:
    for table in _TABLES:
        op.execute(f"CREATE INDEX {table}_person ON profile.{table} (profile_id)")
    # kpi_touches' index by person (the attribution's reads, merges, erasure) led by the
    # profile as kpi_orders_person (profile_0008): no second index to maintain.
    op.execute("CREATE INDEX kpi_touches_person ON profile.kpi_touches (profile_id, at)")
    op.execute("DROP INDEX profile.kpi_touches_profile")


def downgrade() -> None:
    op.execute("CREATE INDEX kpi_touches_profile ON profile.kpi_touches "
               "(workspace_id, profile_id, at)")
    op.execute("DROP INDEX profile.kpi_touches_person")
    for table in _TABLES:
        op.execute(f"DROP INDEX profile.{table}_person")
