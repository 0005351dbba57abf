"""The rebuild's statements: the event-based rollups recomputed set-based from the stored
history (one INSERT ... SELECT ... GROUP BY per rollup table), the same rows the consumer
writes one batch at a time (kpis_store). Everything runs in the rebuild's transaction.

`kpi_x` (a temporary table) holds the workspace's history events that count, read once with
their properties extracted; the per-chunk statements read one time range of it, in time
order, so that what the consumer decides by arrival (the first open or click of a message,
the first event of an order_id) comes out as a replay in time order decides it. Attribution
is decided once at the end, each order on the opens and clicks before it, and a refund
reduces the attributed revenue on its own day. A refund reaches its order
(`refunded`, the attributed revenue) when it is not older than the order, as met in time
order; before it, it counts in sales only, as in the consumer.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from services.profile.domain.conventions import Conventions
from services.profile.domain.kpis import BITS, COUNTED, TOUCHES
from services.profile.kpis_bits import TWICE
from services.profile.kpis_uplift import pack
from shared.db.driver import driver

LONG = 3600.0  # seconds a statement may run: far past the engine's 30 s for requests


async def fetch(conn: Any, sql: str, *args: Any) -> list[Any]:
    """asyncpg's fetch in the rebuild's transaction, with the rebuild's statement timeout."""
    return await (await driver(conn)).fetch(sql, *args, timeout=LONG)  # type: ignore[no-any-return]


_COUNTED = sorted(s.value for s in COUNTED)
_TOUCHED = sorted(s.value for s in TOUCHES)  # opened, clicked
_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
# domain.conventions.order_value in SQL: the first revenue property holding a number (a
# number, or a string that reads as one), not absurd; else 0.
_VALUE = (
    "coalesce((SELECT c.v FROM unnest($6::text[]) WITH ORDINALITY AS r(name, i) "
    "CROSS JOIN LATERAL (SELECT CASE jsonb_typeof(e.properties->r.name) "
    "WHEN 'number' THEN (e.properties->>r.name)::numeric WHEN 'string' THEN CASE WHEN "
    f"e.properties->>r.name ~ '{_NUMBER}' THEN btrim(e.properties->>r.name)::numeric END "
    "END AS v) AS c WHERE c.v IS NOT NULL AND abs(c.v) < 1e12 ORDER BY r.i LIMIT 1), 0)"
    "::float8")
_EXTRACT = (
    "CREATE TEMP TABLE kpi_x ON COMMIT DROP AS SELECT e.event_id, e.profile_id AS pid, "
    "e.timestamp AS at, (e.timestamp AT TIME ZONE $2)::date AS day, CASE WHEN "
    "e.event_id LIKE 'delivery:%' THEN 'd' WHEN e.name = ANY($3::text[]) THEN 'o' WHEN "
    "e.name = ANY($4::text[]) THEN 'r' ELSE 'n' END AS kind, e.properties->>'status' AS "
    "status, left(coalesce(nullif(e.properties->>'message_id', ''), e.event_id), 200) AS "
    "message_id, coalesce(e.properties->>'channel', '') AS channel, "
    "left(e.properties->'journey'->>'key', 200) AS journey, left(e.properties->>'broadcast', "
    "200) AS broadcast, left(e.properties->>'template', 200) AS template, CASE WHEN "
    "e.event_id NOT LIKE 'delivery:%' AND e.name = ANY($3::text[] || $4::text[]) THEN "
    f"{_VALUE} END AS value, CASE WHEN jsonb_typeof(e.properties->'currency') = 'string' THEN "
    "left(upper(btrim(e.properties->>'currency')), 8) ELSE '' END AS currency, "
    "nullif(left(e.properties->>'order_id', 200), '') AS order_id, CASE WHEN "
    "jsonb_typeof(e.properties->$7::text) = 'number' THEN "
    "(e.properties->>$7::text)::float8 END AS score "
    "FROM profile.events e WHERE e.workspace_id = $1::text AND CASE WHEN e.event_id LIKE "
    "'delivery:%' THEN coalesce(e.properties->>'test', 'false') <> 'true' AND "
    "(e.properties->>'status' = ANY($8::text[]) OR (e.properties->>'status' = 'suppressed' "
    "AND e.properties->>'rule' = 'control_group')) ELSE e.name = ANY($3::text[] || "
    "$4::text[] || $5::text[]) END")
# A member of the workspace's reporting segments counts under '' and each of them (sorted as
# Python sorts: code points).
_SEGMENTS = (
    "CREATE TEMP TABLE kpi_seg ON COMMIT DROP AS SELECT m.profile_id AS pid, "
    "array_agg(m.segment_key::text ORDER BY m.segment_key COLLATE \"C\") AS segs FROM "
    "profile.segment_members m JOIN profile.segments g ON g.workspace_id = m.workspace_id AND "
    "g.key = m.segment_key AND g.reporting WHERE m.workspace_id = $1::text GROUP BY 1")
_SEG = ("LEFT JOIN kpi_seg s ON s.pid = x.pid CROSS JOIN LATERAL unnest(array[''] || "
        "coalesce(s.segs, '{}')) AS g(seg)")
_DIMS = ("CROSS JOIN LATERAL (VALUES ('', ''), ('channel', left({t}.channel, 200)), "
         "('journey', {t}.journey), ('broadcast', {t}.broadcast), ('template', {t}.template)) "
         "AS d(dim, key)")
_HAS_DIM = "(d.dim = '' OR coalesce(d.key, '') <> '')"
_IN_CHUNK = "x.at >= $2 AND x.at < $3"
_ADD_COUNTS = (
    "INSERT INTO profile.kpi_counts (workspace_id, day, dim, key, segment, metric, currency, "
    "value) {select} ON CONFLICT (workspace_id, dim, key, segment, day, metric, currency) "
    "DO UPDATE SET value = kpi_counts.value + excluded.value")

# Per chunk ($1 workspace, $2..$3 the time range).
_SENDS = _ADD_COUNTS.format(select=(
    f"SELECT $1::text, x.day, d.dim, d.key, g.seg, x.status, '', count(*) FROM kpi_x x {_SEG} "
    f"{_DIMS.format(t='x')} WHERE x.kind = 'd' AND x.status = ANY($4::text[]) AND "
    f"{_IN_CHUNK} AND {_HAS_DIM} GROUP BY 2, 3, 4, 5, 6"))
# First open (a click counts as one) and first click of each message: the unique counters
# on the day, dimensions and segments of that first one.
_FIRSTS = (
    "WITH f AS (SELECT DISTINCT ON (x.message_id, k.kind) x.*, k.kind AS fk FROM kpi_x x "
    "CROSS JOIN LATERAL (VALUES ('open'), ('click')) AS k(kind) WHERE x.kind = 'd' AND "
    f"x.status IN ('opened', 'clicked') AND (k.kind = 'open' OR x.status = 'clicked') AND "
    f"{_IN_CHUNK} ORDER BY x.message_id, k.kind, x.at, x.event_id), ins AS (INSERT INTO "
    "profile.kpi_firsts (workspace_id, message_id, kind) SELECT $1::text, message_id, fk FROM f "
    "ON CONFLICT DO NOTHING RETURNING message_id, kind) " + _ADD_COUNTS.format(select=(
        "SELECT $1::text, x.day, d.dim, d.key, g.seg, CASE x.fk WHEN 'open' THEN 'unique_opens' "
        f"ELSE 'unique_clicks' END, '', count(*) FROM ins JOIN f x ON x.message_id = "
        f"ins.message_id AND x.fk = ins.kind {_SEG} {_DIMS.format(t='x')} WHERE {_HAS_DIM} "
        "GROUP BY 2, 3, 4, 5, 6")))
# Last open and last click of each message (what orders are attributed to).
_TOUCHES = (
    "INSERT INTO profile.kpi_touches (workspace_id, message_id, kind, profile_id, at, channel, "
    "journey, broadcast, template) SELECT DISTINCT ON (x.message_id, k) $1::text, x.message_id, k, "
    "x.pid, x.at, x.channel, x.journey, x.broadcast, x.template FROM (SELECT x.*, CASE "
    "x.status WHEN 'opened' THEN 'open' ELSE 'click' END AS k FROM kpi_x x WHERE x.kind = 'd' "
    f"AND x.status IN ('opened', 'clicked') AND {_IN_CHUNK}) AS x ORDER BY x.message_id, k, "
    "x.at DESC, x.event_id ON CONFLICT (workspace_id, message_id, kind) DO UPDATE SET "
    "at = greatest(kpi_touches.at, excluded.at), profile_id = excluded.profile_id")
# Each order_id once (its first event); its customer's day; the counters.
_ORDERS = (
    "WITH f AS (SELECT DISTINCT ON (x.k) x.* FROM (SELECT x.*, coalesce(x.order_id, "
    "left('event:' || x.event_id, 200)) AS k FROM kpi_x x WHERE x.kind = 'o' AND "
    f"{_IN_CHUNK}) AS x ORDER BY x.k, x.at, x.event_id), ins AS (INSERT INTO profile.kpi_orders "
    "(workspace_id, order_key, profile_id, at, day, revenue, currency, segments) SELECT $1::text, "
    "x.k, x.pid, x.at, x.day, x.value, x.currency, coalesce(s.segs, '{}') FROM f x LEFT JOIN "
    "kpi_seg s ON s.pid = x.pid ON CONFLICT DO NOTHING RETURNING profile_id, day, revenue, "
    "currency, segments), c AS (INSERT INTO profile.kpi_customer_days (workspace_id, "
    "profile_id, day, currency, orders, revenue) SELECT $1::text, profile_id, day, currency, "
    "count(*), sum(revenue) FROM ins GROUP BY 2, 3, 4 ON CONFLICT (workspace_id, profile_id, "
    "day, currency) DO UPDATE SET orders = kpi_customer_days.orders + excluded.orders, "
    "revenue = kpi_customer_days.revenue + excluded.revenue) " + _ADD_COUNTS.format(select=(
        "SELECT $1::text, i.day, '', '', g.seg, m.metric, i.currency, sum(CASE m.metric WHEN "
        "'orders' THEN 1 ELSE i.revenue END) FROM ins i CROSS JOIN LATERAL unnest(array[''] "
        "|| i.segments) AS g(seg) CROSS JOIN (VALUES ('orders'), ('revenue')) AS m(metric) "
        "GROUP BY 2, 3, 4, 5, 6, 7")))
# Refunds: on their own day, for the customer and in the counters.
_REFUNDS = (
    "WITH c AS (INSERT INTO profile.kpi_customer_days (workspace_id, profile_id, day, "
    "currency, orders, revenue) SELECT $1::text, x.pid, x.day, x.currency, 0, -sum(abs(x.value)) "
    f"FROM kpi_x x WHERE x.kind = 'r' AND {_IN_CHUNK} GROUP BY 2, 3, 4 ON CONFLICT "
    "(workspace_id, profile_id, day, currency) DO UPDATE SET revenue = "
    "kpi_customer_days.revenue + excluded.revenue) " + _ADD_COUNTS.format(select=(
        "SELECT $1::text, x.day, '', '', g.seg, m.metric, x.currency, sum(CASE m.metric WHEN "
        f"'refunds' THEN 1 ELSE abs(x.value) END) FROM kpi_x x {_SEG} CROSS JOIN (VALUES "
        f"('refunds'), ('refunded')) AS m(metric) WHERE x.kind = 'r' AND {_IN_CHUNK} "
        "GROUP BY 2, 3, 4, 5, 6, 7")))
_NPS = _ADD_COUNTS.format(select=(
    "SELECT $1::text, x.day, '', '', g.seg, m.metric, '', count(*) FROM kpi_x x "
    f"{_SEG} CROSS JOIN LATERAL (VALUES (CASE WHEN x.score >= 9 THEN 'nps_promoters' WHEN "
    "x.score >= 7 THEN 'nps_passives' ELSE 'nps_detractors' END), ('nps_responses')) AS "
    f"m(metric) WHERE x.kind = 'n' AND x.score BETWEEN 0 AND 10 AND {_IN_CHUNK} "
    "GROUP BY 2, 3, 4, 5, 6"))
_CONTROL = (
    "INSERT INTO profile.kpi_control (workspace_id, profile_id, since) SELECT $1::text, x.pid, "
    "min(x.at) FROM kpi_x x WHERE x.kind = 'd' AND x.status = 'suppressed' AND "
    f"{_IN_CHUNK} GROUP BY 2 ON CONFLICT DO NOTHING")

# Once, after the chunks ($1 workspace).
_REFUNDED = (
    "WITH t AS MATERIALIZED (SELECT o.order_key, sum(abs(x.value)) AS v FROM kpi_x x JOIN "
    "profile.kpi_orders o ON o.workspace_id = $1::text AND o.order_key = x.order_id AND "
    "o.at <= x.at WHERE x.kind = 'r' GROUP BY 1) UPDATE profile.kpi_orders o SET refunded = "
    "o.refunded + t.v FROM t WHERE o.workspace_id = $1::text AND o.order_key = t.order_key")
# kpis.attribute in SQL: the last click within the click window before the order, else the
# last open within the open window; ties go to the greater message id. Over every open and
# click of the history: the consumer, meeting it in time order, decides each order on the
# touches before it (a message clicked again after the order still holds it).
_ATTRIBUTE = (
    "WITH b AS MATERIALIZED (SELECT o.order_key, t.* FROM profile.kpi_orders o CROSS JOIN "
    "LATERAL (SELECT t.message_id, left(t.channel, 16) AS channel, t.journey, t.broadcast, "
    "t.template FROM kpi_x t WHERE t.kind = 'd' AND t.status IN ('opened', 'clicked') AND "
    "t.pid = o.profile_id AND t.at <= o.at AND t.at >= o.at - greatest($2::interval, "
    "$3::interval) AND ((t.status = 'clicked' AND t.at >= o.at - $2::interval) OR "
    "(t.status = 'opened' AND t.at >= o.at - $3::interval)) ORDER BY t.status = 'clicked' "
    "DESC, t.at DESC, t.message_id DESC LIMIT 1) AS t WHERE o.workspace_id = $1::text) "
    "UPDATE profile.kpi_orders o SET message_id = b.message_id, channel = b.channel, "
    "journey = b.journey, broadcast = b.broadcast, template = b.template FROM b WHERE "
    "o.workspace_id = $1::text AND o.order_key = b.order_key")
_ATTRIBUTED = _ADD_COUNTS.format(select=(
    "SELECT $1::text, o.day, d.dim, d.key, g.seg, m.metric, o.currency, sum(CASE m.metric WHEN "
    "'attributed_orders' THEN 1 ELSE o.revenue END) FROM profile.kpi_orders o "
    f"{_DIMS.format(t='o')} CROSS JOIN LATERAL unnest(array[''] || o.segments) AS g(seg) "
    "CROSS JOIN (VALUES ('attributed_orders'), ('attributed_revenue')) AS m(metric) WHERE "
    f"o.workspace_id = $1::text AND o.message_id IS NOT NULL AND {_HAS_DIM} "
    "GROUP BY 2, 3, 4, 5, 6, 7"))
_ATTRIBUTED_REFUNDS = _ADD_COUNTS.format(select=(
    "SELECT $1::text, x.day, d.dim, d.key, g.seg, 'attributed_refunded', o.currency, "
    "sum(abs(x.value)) FROM kpi_x x JOIN profile.kpi_orders o ON o.workspace_id = $1::text AND "
    f"o.order_key = x.order_id AND o.at <= x.at {_DIMS.format(t='o')} CROSS JOIN LATERAL "
    "unnest(array[''] || "
    "o.segments) AS g(seg) WHERE x.kind = 'r' AND o.message_id IS NOT NULL AND "
    f"{_HAS_DIM} GROUP BY 2, 3, 4, 5, 6, 7"))

# The distinct-people bitmaps: numbers for the profiles new to the workspace (in order of
# their first day), then per (figure, dimension, key, segment, day, chunk) the OR of one bit
# per fact (a person's repeated facts set the same bit), and for `customer` the bits of
# those with two orders or more that day (kpis_bits).
# Customers with a refund alone are numbered too: every customer with money has a number
# (kpi_money, below).
_WHO = (
    "(SELECT x.pid, x.day FROM kpi_x x WHERE x.kind = 'd' AND x.status IN ('sent', "
    "'suppressed') UNION ALL SELECT o.profile_id, o.day FROM profile.kpi_orders o WHERE "
    "o.workspace_id = $1::text AND o.profile_id <> 'erased' UNION ALL SELECT x.pid, x.day "
    "FROM kpi_x x WHERE x.kind = 'r')")
_NUMBERS = (
    f"WITH p AS (SELECT pid, min(day) AS lo, max(day) AS hi FROM {_WHO} AS w GROUP BY 1), u AS "
    "(UPDATE profile.kpi_numbers k SET first_day = least(k.first_day, p.lo), last_day = "
    "greatest(k.last_day, p.hi) FROM p WHERE k.workspace_id = $1::text AND k.profile_id = "
    "p.pid AND (p.lo < k.first_day OR p.hi > k.last_day)), new AS (SELECT p.*, "
    "row_number() OVER (ORDER BY p.lo, p.pid) - 1 AS i, count(*) OVER () AS c FROM p WHERE "
    "NOT EXISTS (SELECT 1 FROM profile.kpi_numbers k WHERE k.workspace_id = $1::text AND "
    "k.profile_id = p.pid)), nx AS (INSERT INTO profile.kpi_number_next (workspace_id, next) "
    "SELECT $1::text, count(*) FROM new HAVING count(*) > 0 ON CONFLICT (workspace_id) DO "
    "UPDATE SET next = kpi_number_next.next + excluded.next RETURNING next) INSERT INTO "
    "profile.kpi_numbers (workspace_id, profile_id, n, first_day, last_day) SELECT $1::text, "
    "new.pid, nx.next - new.c + new.i, new.lo, new.hi FROM new CROSS JOIN nx")
_ZERO = f"repeat('0', {BITS})::bit({BITS})"
_BIT = f"set_bit({_ZERO}, k.n % {BITS}, 1)"
_BITS = (
    "INSERT INTO profile.kpi_bits (workspace_id, figure, dim, key, segment, day, chunk, bits, "
    f"twice) SELECT $1::text, f.figure, f.dim, f.key, f.seg, f.day, k.n / {BITS}, "
    f"bit_or({_BIT}), CASE WHEN f.figure = ANY($2::text[]) THEN coalesce(bit_or(CASE WHEN "
    f"f.cnt >= 2 THEN {_BIT} END), {_ZERO}) END FROM (SELECT 'reached'::text AS figure, "
    f"d.dim, d.key, g.seg, x.day, x.pid, 1 AS cnt FROM kpi_x x {_DIMS.format(t='x')} {_SEG} "
    f"WHERE x.kind = 'd' AND x.status = 'sent' AND {_HAS_DIM} UNION ALL "
    # The CRM uplift's control arm: members whose send journey suppressed (kpis_uplift).
    f"SELECT 'control', '', '', g.seg, x.day, x.pid, 1 FROM kpi_x x {_SEG} WHERE "
    "x.kind = 'd' AND x.status = 'suppressed' UNION ALL SELECT 'customer', '', '', g.seg, "
    "x.day, x.profile_id, count(*)::int FROM profile.kpi_orders x CROSS JOIN LATERAL "
    "unnest(array[''] || x.segments) AS g(seg) WHERE x.workspace_id = $1::text AND "
    "x.profile_id <> 'erased' GROUP BY 1, 2, 3, 4, 5, 6) AS f JOIN profile.kpi_numbers k ON "
    "k.workspace_id = $1::text AND k.profile_id = f.pid GROUP BY 2, 3, 4, 5, 6, 7")

# The customers' days by number (kpis_uplift's read): one kpi_money row per day and currency.
_MONEY = (
    "INSERT INTO profile.kpi_money (workspace_id, day, currency, data) SELECT $1::text, "
    "d.day, d.currency, " + pack("k.n", "d.revenue", "d.orders") + " FROM "
    "profile.kpi_customer_days d JOIN profile.kpi_numbers k ON k.workspace_id = $1::text AND "
    "k.profile_id = d.profile_id WHERE d.workspace_id = $1::text GROUP BY 2, 3")


async def extract(conn: Any, ws: str, conv: Conventions) -> list[tuple[datetime, datetime, int]]:
    """Read the history that counts into `kpi_x` and the reporting memberships into
    `kpi_seg`; returns the chunks: (from, to, events) in time order, about `CHUNK` each."""
    await fetch(conn, _EXTRACT, ws, conv.timezone, conv.order_events, conv.refund_events,
                conv.nps_events, conv.revenue_properties, conv.nps_property,
                _COUNTED + _TOUCHED)
    await fetch(conn, "CREATE INDEX ON kpi_x (at)")
    await fetch(conn, "CREATE INDEX ON kpi_x (pid, at) WHERE kind = 'd' AND status IN "
                "('opened', 'clicked')")
    await fetch(conn, _SEGMENTS, ws)
    await fetch(conn, "CREATE UNIQUE INDEX ON kpi_seg (pid)")
    await fetch(conn, "ANALYZE kpi_x")
    await fetch(conn, "ANALYZE kpi_seg")
    # Equal time spans of about CHUNK events each (one pass over the index for the counts).
    first, last, n = (await fetch(conn, "SELECT min(at), max(at), count(*) FROM kpi_x"))[0]
    if not n:
        return []
    parts = max(1, -(-int(n) // CHUNK))
    step = (last - first) / parts
    bounds = [first + step * k for k in range(parts)] + [last + timedelta(microseconds=1)]
    counts = {int(r[0]): int(r[1]) for r in await fetch(
        conn, "SELECT width_bucket(extract(epoch FROM at), $1::float8, $2::float8, $3::int), "
        "count(*) FROM kpi_x GROUP BY 1", bounds[0].timestamp(), bounds[-1].timestamp(), parts)}
    return [(bounds[k], bounds[k + 1], counts.get(k + 1, 0)) for k in range(parts)]


CHUNK = 500_000  # events of kpi_x per chunk (per progress report)


async def chunk(conn: Any, ws: str, lo: datetime, hi: datetime) -> None:
    """Add one time range of the history to the rollups (time order across chunks)."""
    await fetch(conn, _SENDS, ws, lo, hi, _COUNTED)
    await fetch(conn, _FIRSTS, ws, lo, hi)
    await fetch(conn, _TOUCHES, ws, lo, hi)
    await fetch(conn, _ORDERS, ws, lo, hi)
    await fetch(conn, _REFUNDS, ws, lo, hi)
    await fetch(conn, _NPS, ws, lo, hi)
    await fetch(conn, _CONTROL, ws, lo, hi)


async def finish(conn: Any, ws: str, conv: Conventions) -> None:
    """Refunds on their orders, attribution, and the people bitmaps."""
    # The orders were all written in this transaction: the planner has to know how many.
    await fetch(conn, "ANALYZE profile.kpi_orders")
    await fetch(conn, _REFUNDED, ws)
    await fetch(conn, _ATTRIBUTE, ws, conv.attribution_click_window,
                conv.attribution_open_window)
    await fetch(conn, "ANALYZE profile.kpi_orders")  # now attributed: not all NULL
    await fetch(conn, _ATTRIBUTED, ws)
    await fetch(conn, _ATTRIBUTED_REFUNDS, ws)
    await fetch(conn, _NUMBERS, ws)
    await fetch(conn, _BITS, ws, list(TWICE))
    await fetch(conn, _MONEY, ws)
