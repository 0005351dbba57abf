"""KPI numbers: the primary key is their one index

Every statement finds a number by (workspace, profile): the consumer's numbering, a merge
forgetting its losers' numbers, an erasure, the rebuild. Two more indexes cost every new
number (dozens per batch) their entries, and misled probes: on the tiny table a cached plan
was made for, the planner took the UNIQUE (workspace_id, n) index with the workspace alone
(a scan of the workspace's numbers per probe). `kpi_numbers_person` (profile_0011) goes, and
so does UNIQUE (workspace_id, n): numbers are unique by how they are given out (the
workspace's `kpi_number_next` row, locked by every statement that assigns them).

Revision ID: profile_0012
Revises: profile_0011
Create Date: 2026-12-06 07:45:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = 'profile_0012'
down_revision: str | None = 'profile_0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DROP INDEX profile.kpi_numbers_person")
    op.execute("ALTER TABLE profile.kpi_numbers DROP CONSTRAINT kpi_numbers_workspace_id_n_key")


def downgrade() -> None:
    op.execute("ALTER TABLE profile.kpi_numbers ADD UNIQUE (workspace_id, n)")
    op.execute("CREATE INDEX kpi_numbers_person ON profile.kpi_numbers (profile_id)")
