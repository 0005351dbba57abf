"""The CRM uplift's rollups (`uplift.crm` of `GET /v1/kpis`): control-group members and each
customer's orders and net revenue per local day (`kpi_customer_days`, and the same amounts
packed by customer number in `kpi_money`, what the read sums). Written in the consumer's
batch transaction (called from kpis_store), read without scanning the event history."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncConnection

from services.profile.domain.kpis import BITS
from services.profile.repository import fetch
from shared.uplift import conversion, newcombe, welch

# (workspace, profile, local day, currency) -> [new orders, net revenue]: kpi_customer_days.
Money = dict[tuple[str, str, date, str], list[Any]]
# kpi_money's records: customer number, net revenue and new orders added (big-endian).
RECORD = np.dtype([("n", ">i8"), ("v", ">f8"), ("o", ">i4")])


def pack(n: str, v: str, o: str) -> str:
    """The SQL aggregate packing rows' (number, revenue, orders) into RECORDs."""
    return (f"string_agg(int8send(({n})::int8) || float8send(({v})::float8) || "
            f"int4send(({o})::int4), ''::bytea ORDER BY {n})")


# One kpi_money row per (workspace, day, currency) of the rows' (workspace, number, day,
# currency, orders, revenue); {0}..{5}: the numbers of its parameters.
ADD_MONEY = (
    "INSERT INTO profile.kpi_money (workspace_id, day, currency, data) SELECT ws, d, c, "
    + pack("n", "v", "o") + " FROM unnest(${0}::text[], ${1}::int[], ${2}::date[], "
    "${3}::text[], ${4}::int[], ${5}::float8[]) AS t(ws, n, d, c, o, v) GROUP BY 1, 2, 3")
# Each (workspace, day, currency) of $1..$3 as one kpi_money row again, from the customers'
# days (the numbered ones: every customer with money has a number). After COMPACT_LOCK (a
# statement of its own, so that this one sees what the lock waited for).
# The locks in the order of their keys (hashes): every transaction the same, no deadlock.
COMPACT_LOCK = (
    "SELECT count(pg_advisory_xact_lock(h)) FROM (SELECT DISTINCT hashtext("
    "'profile-kpi-money:' || ws || ':' || d || ':' || c) AS h FROM unnest($1::text[], "
    "$2::date[], $3::text[]) AS t(ws, d, c) ORDER BY 1) AS t")
COMPACT = (
    "WITH t AS (SELECT DISTINCT * FROM unnest($1::text[], $2::date[], $3::text[]) AS t(ws, d, "
    "c)), gone AS (DELETE FROM profile.kpi_money x USING t WHERE x.workspace_id = t.ws AND "
    "x.day = t.d AND x.currency = t.c) INSERT INTO profile.kpi_money (workspace_id, day, "
    "currency, data) SELECT t.ws, t.d, t.c, " + pack("k.n", "m.revenue", "m.orders") +
    " FROM t JOIN profile.kpi_customer_days m ON m.workspace_id = t.ws AND m.day = t.d AND "
    "m.currency = t.c JOIN profile.kpi_numbers k ON k.workspace_id = m.workspace_id AND "
    "k.profile_id = m.profile_id GROUP BY 1, 2, 3")


def _columns(rows: list[tuple[Any, ...]], n: int) -> list[list[Any]]:
    return [[row[i] for row in rows] for i in range(n)]


async def known_control(conn: AsyncConnection, first: dict[tuple[str, str], datetime]
                        ) -> None:
    """Members as profile learns them: (workspace, profile) -> first suppressed send."""
    if first:
        await fetch(conn, "INSERT INTO profile.kpi_control (workspace_id, profile_id, since) "
                    "SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[]) "
                    "ON CONFLICT DO NOTHING",
                    *_columns([(*k, v) for k, v in first.items()], 3))


def add_days(select: str) -> str:
    """The statement that adds `select`'s (workspace, profile, local day, currency, new
    orders, net revenue) rows to the customers' days (several rows of one day add up)."""
    return (
        "INSERT INTO profile.kpi_customer_days (workspace_id, profile_id, day, currency, "
        f"orders, revenue) SELECT ws, p, d, c, sum(n), sum(v) FROM ({select}) AS m(ws, p, d, "
        "c, n, v) GROUP BY 1, 2, 3, 4 ON CONFLICT (workspace_id, profile_id, day, currency) DO "
        "UPDATE SET orders = kpi_customer_days.orders + excluded.orders, revenue = "
        "kpi_customer_days.revenue + excluded.revenue")


# A loser's rows of table `x`: by its profile id (unique across workspaces: the tables'
# `*_person` indexes), the workspace compared in a form no index serves, so that the only
# index a probe can use is the one led by the profile (kpis_store.repoint).
BY_LOSER = "x.profile_id = m.l AND x.workspace_id || '' = m.w"
# Merges (CTEs over `m(w, l, s)`: workspace, loser, survivor; kpis_store.repoint): a
# loser's days fold into the survivor's, and a loser in the control group makes the survivor
# a member (its `control` bits move with the other people bitmaps).
# The moved days (g: workspace, loser, survivor, day, currency, orders, revenue) go to
# kpi_money with the numbers (kpis_store.write).
FOLD = (
    "g AS (DELETE FROM profile.kpi_customer_days x USING m WHERE " + BY_LOSER + " RETURNING "
    "x.workspace_id, x.profile_id, m.s, x.day, x.currency, x.orders, x.revenue), days AS ("
    + add_days("SELECT workspace_id, s, day, currency, orders, revenue FROM g") + "), k AS "
    "(DELETE FROM profile.kpi_control x USING m WHERE " + BY_LOSER + " RETURNING x.*, m.s), "
    "ctl AS (INSERT INTO profile.kpi_control (workspace_id, profile_id, since) SELECT "
    "workspace_id, s, min(since) FROM k GROUP BY 1, 2 ON CONFLICT DO NOTHING)")


_ZERO = f"repeat('0', {BITS})::bit({BITS})"
# Per chunk of numbers: the treated arm (sent a message in the window, neither in the
# window's control bitmaps nor a known member) and the control arm (control bitmaps, or
# sent and a known member: kpi_control); then the arms' sizes.
_ARMS = (
    "WITH a AS (SELECT chunk, bit_or(bits) FILTER (WHERE figure = 'reached') AS r, "
    "bit_or(bits) FILTER (WHERE figure = 'control') AS c FROM profile.kpi_bits WHERE "
    "workspace_id = $1 AND segment = $2 AND dim = '' AND key = '' AND figure = "
    "ANY(ARRAY['reached', 'control']) AND day BETWEEN $3 AND $4 GROUP BY 1), k AS (SELECT "
    f"n.n / {BITS} AS chunk, profile.kpi_bitmap(array_agg(n.n % {BITS})) AS k FROM "
    "profile.kpi_control c JOIN profile.kpi_numbers n ON n.workspace_id = c.workspace_id AND "
    "n.profile_id = c.profile_id WHERE c.workspace_id = $1 AND n.n / "
    f"{BITS} IN (SELECT chunk FROM a) GROUP BY 1), x AS (SELECT a.chunk, coalesce(a.r, {_ZERO}) "
    f"AS r, coalesce(a.c, {_ZERO}) AS c, coalesce(k.k, {_ZERO}) AS k FROM a LEFT JOIN k "
    "USING (chunk)), arm AS MATERIALIZED (SELECT chunk, r & ~(c | k) AS treated, "
    "(r | c) & (c | k) AS control FROM x) ")
# The arms' bitmaps per chunk, then the window's kpi_money rows (every currency; whether
# it counts for revenue): numpy sums each customer's records and meets them with the arms
# (crm). A number outside the arms (a forgotten one, a merge's loser) is left out there.
_MONEY = (
    "SELECT chunk, treated, control, NULL::bytea AS data, NULL::bool AS counts FROM arm "
    "UNION ALL SELECT NULL, NULL, NULL, data, currency = ANY($5::text[]) FROM "
    "profile.kpi_money WHERE workspace_id = $1 AND day BETWEEN $3 AND $4")
# Room in memory for the reads' hashes (the default 4 MB spilled to disk at 100 k customers),
# for this transaction only; and a plan for the window's own values (the prepared
# statement's generic plan, chosen after five runs, was twice as slow).
READ_SETTINGS = ("SELECT set_config('work_mem', '64MB', true), "
                 "set_config('plan_cache_mode', 'force_custom_plan', true)")


async def read_settings(conn: AsyncConnection) -> None:
    """READ_SETTINGS for the rest of `conn`'s transaction (begun here when it has none, so
    that they end with it and never outlive the request on a pooled connection)."""
    if not conn.in_transaction():
        await conn.begin()
    await fetch(conn, READ_SETTINGS)


async def crm(conn: AsyncConnection, ws: str, first: date, last: date, segment: str,
              currency: str) -> dict[str, Any]:
    """All treated customers (sent a message in the window, not control-group members)
    against the control group's members whose marketing send was suppressed in the window:
    conversion (an order in the window) with Newcombe's interval, net revenue per customer
    (in the workspace currency) with Welch's. Exact: ORs of the window's day bitmaps, and
    each customer's days."""
    currencies = sorted({currency, ""})
    await read_settings(conn)
    rows = _arms_sums(await fetch(conn, _ARMS + _MONEY, ws, segment, first, last,
                                  currencies))
    arms = {bool(r["control"]): r for r in rows}
    treated, control = _arm(arms.get(False)), _arm(arms.get(True))
    interval = newcombe((treated["converted"], treated["customers"]),
                        (control["converted"], control["customers"]))
    money = welch(_sample(arms.get(False)), _sample(arms.get(True)))
    rt, rc = treated["conversion"], control["conversion"]
    return {"treated": treated, "control": control, "currency": currency or None,
            "uplift": None if rt is None or rc is None else round(rt - rc, 6),
            "ci95": None if interval is None else [round(interval[0], 6),
                                                   round(interval[1], 6)],
            "ci_method": "newcombe", "treated_size": treated["customers"],
            "control_size": control["customers"],
            "revenue_per_customer": {"difference": money["difference"], "ci95": money["ci95"],
                                     "ci_method": "welch", "df": money["df"]}}


def _arms_sums(found: list[Any]) -> list[dict[str, Any]]:
    """Per arm (treated, control: the bits set in their bitmaps): its size, the customers
    with an order in the window, their net revenue in the currencies that count, and its
    squares (each customer's window sum of its records first)."""
    chunks = [r for r in found if r[0] is not None]
    size = (max(r[0] for r in chunks) + 1) * BITS if chunks else 0
    arm = np.zeros(size, np.uint8)  # per number: 1 treated, 2 control (disjoint), else 0
    for chunk, treated, control, _data, _counts in chunks:
        part = arm[chunk * BITS:(chunk + 1) * BITS]
        part += np.unpackbits(np.frombuffer(treated.bytes, np.uint8), count=BITS)
        part += 2 * np.unpackbits(np.frombuffer(control.bytes, np.uint8), count=BITS)
    data = [r for r in found if r[0] is None]
    # each record's number, new orders and revenue (0 in a currency that does not count),
    # converted row by row into one array each (no copy of the rows joined first)
    records = sum(len(r[3]) // RECORD.itemsize for r in data)
    n, o, v = np.empty(records, np.intp), np.empty(records), np.empty(records)
    at = 0
    for _chunk, _treated, _control, rows, counts in data:
        recs = np.frombuffer(rows, RECORD)
        k = len(recs)
        n[at:at + k], o[at:at + k] = recs["n"], recs["o"]
        v[at:at + k] = recs["v"] if counts else 0.0
        at += k
    width = max(size, int(n.max()) + 1) if len(n) else size  # a number past the arms' chunks
    orders = np.bincount(n, o, width)[:size]
    money = np.bincount(n, v, width)[:size]
    arm_of = arm.astype(np.intp)  # bincount's index type, cast once for its four calls
    sizes = np.bincount(arm_of, minlength=4)
    converted = np.bincount(arm_of, orders > 0, 4)
    totals, squares = np.bincount(arm_of, money, 4), np.bincount(arm_of, money * money, 4)
    rows = []
    for is_control, code in ((False, 1), (True, 2)):
        count = int(sizes[code])
        if not count:
            continue
        total = float(totals[code])
        mean = total / count
        rows.append({"control": is_control, "n": count, "converted": int(converted[code]),
                     "total": total, "squares": float(squares[code]), "mean": mean,
                     "var": max(0.0, float(squares[code]) - count * mean * mean) / (count - 1)
                     if count > 1 else None})
    return rows


def _arm(row: Any) -> dict[str, Any]:
    n, converted = (int(row["n"]), int(row["converted"])) if row else (0, 0)
    return {"customers": n, "converted": converted, "conversion": conversion(converted, n),
            "revenue": round(float(row["total"]), 2) if row else 0.0,
            "revenue_per_customer": round(float(row["mean"]), 6) if row else None}


def _sample(row: Any) -> tuple[float, float, int]:
    if row is None:
        return 0.0, 0.0, 0
    return float(row["mean"]), float(row["var"] or 0.0), int(row["n"])


async def compact(conn: AsyncConnection, keys: list[tuple[str, date, str]]) -> None:
    """The (workspace, day, currency)s' kpi_money rows as one row each again (COMPACT)."""
    if keys:
        cols = _columns(sorted(set(keys)), 3)
        await fetch(conn, COMPACT_LOCK, *cols)
        await fetch(conn, COMPACT, *cols)
