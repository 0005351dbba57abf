"""kpi_money: the customers' orders and net revenue per local day, packed by number for the
CRM uplift's read (`uplift.crm`: numpy sums each customer's window from the window's rows)

Append-only: each write of kpi_customer_days (an order, a refund, a merge, the rebuild, an
erasure) also appends one row per (workspace, local day, currency) whose `data` packs
fixed-width big-endian records (int8 customer number, float8 net revenue delta, int4 new
orders delta; kpis_uplift.PACK). A customer's window sum is the sum of its records in the
window's rows. Rows of a day are compacted into one (kpis_uplift.compact) now and then, and
when an erasure takes a customer out. Every profile with a customer day has a number now
(kpi_numbers): a profile numbered later would find its earlier money missing.

Revision ID: profile_0009
Revises: profile_0008
Create Date: 2026-12-05 21:40:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = 'profile_0009'
down_revision: str | None = 'profile_0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("""CREATE TABLE profile.kpi_money (
        workspace_id varchar(64) NOT NULL, day date NOT NULL, currency varchar(8) NOT NULL,
        id bigint GENERATED ALWAYS AS IDENTITY, data bytea NOT NULL,
        PRIMARY KEY (workspace_id, day, currency, id))""")
    # Records are read whole (numpy): no compression to undo on each read.
    op.execute("ALTER TABLE profile.kpi_money ALTER COLUMN data SET STORAGE EXTERNAL")
    # Profiles with money (a refund alone) and no number yet get the next numbers.
    op.execute("""WITH p AS (SELECT d.workspace_id AS ws, d.profile_id AS pid, min(d.day) AS
        lo, max(d.day) AS hi FROM profile.kpi_customer_days d WHERE NOT EXISTS (SELECT 1 FROM
        profile.kpi_numbers k WHERE k.workspace_id = d.workspace_id AND k.profile_id =
        d.profile_id) GROUP BY 1, 2), new AS (SELECT p.*, row_number() OVER (PARTITION BY ws
        ORDER BY lo, pid) - 1 AS i, count(*) OVER (PARTITION BY ws) AS c FROM p), nx AS
        (INSERT INTO profile.kpi_number_next (workspace_id, next) SELECT DISTINCT ws, c FROM
        new ON CONFLICT (workspace_id) DO UPDATE SET next = kpi_number_next.next +
        excluded.next RETURNING workspace_id, next) INSERT INTO profile.kpi_numbers
        (workspace_id, profile_id, n, first_day, last_day) SELECT new.ws, new.pid, nx.next -
        new.c + new.i, new.lo, new.hi FROM new JOIN nx ON nx.workspace_id = new.ws""")
    op.execute("""INSERT INTO profile.kpi_money (workspace_id, day, currency, data) SELECT
        d.workspace_id, d.day, d.currency, string_agg(int8send(k.n::int8) ||
        float8send(d.revenue) || int4send(d.orders), ''::bytea ORDER BY k.n) FROM
        profile.kpi_customer_days d JOIN profile.kpi_numbers k ON k.workspace_id =
        d.workspace_id AND k.profile_id = d.profile_id GROUP BY 1, 2, 3""")


def downgrade() -> None:
    op.execute("DROP TABLE profile.kpi_money")
