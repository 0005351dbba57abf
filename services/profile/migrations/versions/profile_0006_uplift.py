"""CRM uplift: the global control group's members as profile learns them, and each
customer's orders and net revenue per local day

Read by `uplift.crm` of `GET /v1/kpis` (docs/metrics.md#upliftcrm), written by the consumer
in the batch's own transaction (services/profile/kpis_store.py).

Revision ID: profile_0006
Revises: profile_0005
Create Date: 2026-12-04 21:30:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = 'profile_0006'
down_revision: str | None = 'profile_0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Members of journey's global control group: learned from the first `suppressed`
    # delivery event with `rule: control_group` (membership never changes in journey).
    op.execute("""CREATE TABLE profile.kpi_control (
        workspace_id varchar(64) NOT NULL, profile_id varchar(36) NOT NULL,
        since timestamptz NOT NULL, PRIMARY KEY (workspace_id, profile_id))""")
    # Per customer and local day: new orders and net revenue (orders minus refunds, each on
    # its own day) per currency. Revenue per customer over a window sums a customer's days.
    op.execute("""CREATE TABLE profile.kpi_customer_days (
        workspace_id varchar(64) NOT NULL, profile_id varchar(36) NOT NULL, day date NOT NULL,
        currency varchar(8) NOT NULL, orders integer NOT NULL, revenue double precision
        NOT NULL, PRIMARY KEY (workspace_id, profile_id, day, currency))""")
    op.execute("CREATE INDEX kpi_customer_days_day ON profile.kpi_customer_days "
               "(workspace_id, day)")


def downgrade() -> None:
    op.execute("DROP TABLE profile.kpi_customer_days")
    op.execute("DROP TABLE profile.kpi_control")
