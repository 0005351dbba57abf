"""kpi_counts: room in each page for the consumer's updates (fillfactor 50)

Every batch adds to the same few hundred counter rows of the day (workspace, dim, key,
segment, day, metric, currency): an update per row per batch. In full pages (the default
fillfactor 100) each new version went to another page, with a new entry in the primary key
(7 columns, text keys): 157 of 5,596 updates were HOT in `bench/profile.py --rollups
compare` (20 000 events). With half of each page free they stay in their page (HOT: no index
entry; the page's dead versions pruned when it is next read): 2,969 of 5,560. The table is
small (one row per key, day and metric: ~30 k rows at 10 M events), so its doubled heap costs
the reads little.

Revision ID: profile_0010
Revises: profile_0009
Create Date: 2026-12-06 00:45:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = 'profile_0010'
down_revision: str | None = 'profile_0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE profile.kpi_counts SET (fillfactor = 50)")


def downgrade() -> None:
    op.execute("ALTER TABLE profile.kpi_counts RESET (fillfactor)")
