"""KPI rollups: counters, distinct-people sets, unique opens/clicks, touches, orders, state
snapshots, rebuild runs; segments get the `reporting` flag

Everything the KPI answer reads (docs/metrics.md), maintained by the consumer in the batch's
own transaction (services/profile/kpis_store.py).

Revision ID: profile_0005
Revises: profile_0004
Create Date: 2026-12-04 20:45:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = 'profile_0005'
down_revision: str | None = 'profile_0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ('kpi_counts', 'kpi_people', 'kpi_firsts', 'kpi_touches', 'kpi_orders', 'kpi_state',
          'kpi_rebuilds')


def upgrade() -> None:
    op.execute("ALTER TABLE profile.segments ADD COLUMN reporting boolean NOT NULL "
               "DEFAULT false")
    # Additive figures per local day, dimension (''|channel|journey|broadcast|template), key,
    # reporting segment ('' = everybody), metric and currency ('' when none applies).
    op.execute("""CREATE TABLE profile.kpi_counts (
        workspace_id varchar(64) NOT NULL, day date NOT NULL, dim varchar(16) NOT NULL,
        key varchar(200) NOT NULL, segment varchar(100) NOT NULL, metric varchar(80) NOT NULL,
        currency varchar(8) NOT NULL, value double precision NOT NULL,
        PRIMARY KEY (workspace_id, dim, key, segment, day, metric, currency))""")
    # Who counted for a distinct-people figure ('reached', 'customer') in a local day, ISO
    # week and month (`interval`, `start`); n = how many facts (orders for 'customer'). Each
    # new row also adds 1 to the counter `<figure>@<interval>` in kpi_counts.
    op.execute("""CREATE TABLE profile.kpi_people (
        workspace_id varchar(64) NOT NULL, figure varchar(16) NOT NULL, dim varchar(16) NOT NULL,
        key varchar(200) NOT NULL, segment varchar(100) NOT NULL, interval varchar(8) NOT NULL,
        start date NOT NULL, profile_id varchar(36) NOT NULL, n integer NOT NULL,
        PRIMARY KEY (workspace_id, figure, dim, key, segment, interval, start, profile_id))""")
    op.execute("CREATE INDEX kpi_people_profile ON profile.kpi_people (profile_id)")
    # First open / first click of each message: a unique open or click counts once.
    op.execute("""CREATE TABLE profile.kpi_firsts (
        workspace_id varchar(64) NOT NULL, message_id varchar(200) NOT NULL,
        kind varchar(8) NOT NULL, PRIMARY KEY (workspace_id, message_id, kind))""")
    # Last open / click of each message, with its dimensions: what orders are attributed to.
    op.execute("""CREATE TABLE profile.kpi_touches (
        workspace_id varchar(64) NOT NULL, message_id varchar(200) NOT NULL,
        kind varchar(8) NOT NULL, profile_id varchar(36) NOT NULL,
        at timestamptz NOT NULL, channel varchar(16) NOT NULL, journey varchar(200),
        broadcast varchar(200), template varchar(200),
        PRIMARY KEY (workspace_id, message_id, kind))""")
    op.execute("CREATE INDEX kpi_touches_profile ON profile.kpi_touches "
               "(workspace_id, profile_id, at)")
    # Each order once (by order_id), its value, refunds and the message it is attributed to.
    op.execute("""CREATE TABLE profile.kpi_orders (
        workspace_id varchar(64) NOT NULL, order_key varchar(200) NOT NULL,
        profile_id varchar(36) NOT NULL, at timestamptz NOT NULL, day date NOT NULL,
        revenue double precision NOT NULL, currency varchar(8) NOT NULL,
        refunded double precision NOT NULL DEFAULT 0, segments text[] NOT NULL,
        message_id varchar(200), channel varchar(16), journey varchar(200),
        broadcast varchar(200), template varchar(200),
        PRIMARY KEY (workspace_id, order_key))""")
    op.execute("CREATE INDEX kpi_orders_profile ON profile.kpi_orders "
               "(workspace_id, profile_id, at)")
    # End-of-day state figures (base, lifecycle, value) per reporting segment.
    op.execute("""CREATE TABLE profile.kpi_state (
        workspace_id varchar(64) NOT NULL, day date NOT NULL, segment varchar(100) NOT NULL,
        figures jsonb NOT NULL, taken_at timestamptz NOT NULL,
        PRIMARY KEY (workspace_id, segment, day))""")
    op.execute("""CREATE TABLE profile.kpi_rebuilds (
        id varchar(36) PRIMARY KEY, workspace_id varchar(64) NOT NULL,
        status varchar(16) NOT NULL, events_done bigint NOT NULL DEFAULT 0,
        events_total bigint NOT NULL DEFAULT 0, error text,
        started_at timestamptz NOT NULL DEFAULT now(), finished_at timestamptz)""")


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TABLE profile.{table}")
    op.execute("ALTER TABLE profile.segments DROP COLUMN reporting")
