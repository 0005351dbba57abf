"""KPI people as bitmaps: profiles numbered densely per workspace, and one bit string per
(figure, dimension, key, segment, local day, chunk of 8192 numbers) instead of one row per
person per day, week and month (`kpi_people`, dropped; its day rows are converted)

Weeks, months and any window are the OR of the day bitmaps (docs/metrics.md, "Distinct
customers"); written by the consumer (services/profile/kpis_store.py) and the rebuild
(services/profile/kpis_rebuild_sql.py).

Revision ID: profile_0007
Revises: profile_0006
Create Date: 2026-12-05 03:30:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = 'profile_0007'
down_revision: str | None = 'profile_0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BITS = 8192  # numbers per bitmap row: 1 KB, stored inline (under the 2 KB TOAST threshold)


def upgrade() -> None:
    # Each profile that has a people fact gets the next number of its workspace (assigned on
    # its first fact, never reused); first_day..last_day bound the days whose bitmaps can
    # hold its bit (what a merge or an erasure has to visit).
    op.execute("""CREATE TABLE profile.kpi_numbers (
        workspace_id varchar(64) NOT NULL, profile_id varchar(36) NOT NULL,
        n integer NOT NULL, first_day date NOT NULL, last_day date NOT NULL,
        PRIMARY KEY (workspace_id, profile_id), UNIQUE (workspace_id, n))""")
    op.execute("""CREATE TABLE profile.kpi_number_next (
        workspace_id varchar(64) PRIMARY KEY, next integer NOT NULL)""")
    # bits: who counted for the figure that day (bit n % 8192 of chunk n / 8192); twice
    # (figure 'customer' only, else NULL): who had two facts or more that day.
    op.execute(f"""CREATE TABLE profile.kpi_bits (
        workspace_id varchar(64) NOT NULL, figure varchar(16) NOT NULL,
        dim varchar(16) NOT NULL, key varchar(200) NOT NULL, segment varchar(100) NOT NULL,
        day date NOT NULL, chunk integer NOT NULL, bits bit({BITS}) NOT NULL,
        twice bit({BITS}),
        PRIMARY KEY (workspace_id, figure, dim, key, segment, day, chunk))
        WITH (fillfactor = 75)""")  # room in the page: a day's row is updated in place (HOT)
    # A merge or an erasure visits one chunk's rows of one profile's days (kpis_bits._CLEAR).
    op.execute("CREATE INDEX kpi_bits_chunk ON profile.kpi_bits (workspace_id, chunk, day)")
    op.execute("ALTER TABLE profile.kpi_bits ALTER COLUMN bits SET STORAGE PLAIN, "
               "ALTER COLUMN twice SET STORAGE PLAIN")
    # The bitmap with the given bit positions set (0 = leftmost, as get_bit/set_bit count).
    op.execute(f"""CREATE FUNCTION profile.kpi_bitmap(offs integer[]) RETURNS bit({BITS})
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT rpad(coalesce(string_agg(lpad('1', o - p, '0'), '' ORDER BY o), ''),
                    {BITS}, '0')::bit({BITS})
        FROM (SELECT o, coalesce(lag(o) OVER (ORDER BY o), -1) AS p
              FROM (SELECT DISTINCT unnest(offs) AS o) s WHERE o IS NOT NULL) t $$""")
    # The day rows of kpi_people become bitmaps (weeks and months are ORs of days now).
    op.execute("""INSERT INTO profile.kpi_numbers (workspace_id, profile_id, n, first_day,
        last_day) SELECT workspace_id, profile_id, (row_number() OVER (PARTITION BY
        workspace_id ORDER BY min(start), profile_id) - 1)::int, min(start), max(start)
        FROM profile.kpi_people WHERE interval = 'day' GROUP BY 1, 2""")
    op.execute("""INSERT INTO profile.kpi_number_next (workspace_id, next) SELECT
        workspace_id, max(n) + 1 FROM profile.kpi_numbers GROUP BY 1""")
    op.execute(f"""INSERT INTO profile.kpi_bits (workspace_id, figure, dim, key, segment, day,
        chunk, bits, twice) SELECT p.workspace_id, p.figure, p.dim, p.key, p.segment, p.start,
        k.n / {BITS}, profile.kpi_bitmap(array_agg(k.n % {BITS})), CASE WHEN p.figure =
        'customer' THEN profile.kpi_bitmap(coalesce(array_agg(k.n % {BITS}) FILTER (WHERE
        p.n >= 2), '{{}}')) END FROM profile.kpi_people p JOIN profile.kpi_numbers k ON
        k.workspace_id = p.workspace_id AND k.profile_id = p.profile_id WHERE
        p.interval = 'day' GROUP BY 1, 2, 3, 4, 5, 6, 7""")
    # The sets' counters (`reached@week`, `customer@day:repeat`, ...): read from bits now.
    op.execute("DELETE FROM profile.kpi_counts WHERE metric LIKE '%@%'")
    op.execute("DROP TABLE profile.kpi_people")


def downgrade() -> None:
    # The people sets come back empty: POST /v1/kpis/rebuild refills them.
    op.execute("""CREATE TABLE profile.kpi_people (
        workspace_id varchar(64) NOT NULL, figure varchar(16) NOT NULL, dim varchar(16) NOT NULL,
        key varchar(200) NOT NULL, segment varchar(100) NOT NULL, interval varchar(8) NOT NULL,
        start date NOT NULL, profile_id varchar(36) NOT NULL, n integer NOT NULL,
        PRIMARY KEY (workspace_id, figure, dim, key, segment, interval, start, profile_id))""")
    op.execute("CREATE INDEX kpi_people_profile ON profile.kpi_people (profile_id)")
    op.execute("DROP TABLE profile.kpi_bits")
    op.execute("DROP FUNCTION profile.kpi_bitmap(integer[])")
    op.execute("DROP TABLE profile.kpi_number_next")
    op.execute("DROP TABLE profile.kpi_numbers")
