"""The CRM uplift's rollups (`uplift.crm` of `GET /v1/kpis`): control-group members and each
customer's orders and net revenue per local day. Written in the consumer's batch
transaction (called from kpis_store), read without scanning the event history."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.profile.domain.kpis import BITS
from services.profile.repository import fetch
from shared.uplift import conversion, newcombe, welch

# (workspace, profile, local day, currency) -> [new orders, net revenue]: kpi_customer_days.
Money = dict[tuple[str, str, date, str], list[Any]]


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


# Merges (CTEs over `m(w, l, s)`: workspace, loser, survivor; kpis_store.repoint): a
# loser's days fold into the survivor's, and a loser in the control group makes the survivor
# a member (its `control` bits move with the other people bitmaps).
FOLD = (
    "g AS (DELETE FROM profile.kpi_customer_days x USING m WHERE x.workspace_id = m.w AND "
    "x.profile_id = m.l RETURNING x.workspace_id, m.s, x.day, x.currency, x.orders, "
    "x.revenue), days AS (" + add_days("SELECT * FROM g") + "), k AS (DELETE FROM "
    "profile.kpi_control x USING m WHERE x.workspace_id = m.w AND x.profile_id = m.l "
    "RETURNING x.*, m.s), ctl AS (INSERT INTO profile.kpi_control (workspace_id, "
    "profile_id, since) SELECT workspace_id, s, min(since) FROM k GROUP BY 1, 2 ON CONFLICT "
    "DO NOTHING)")


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
# Each customer with orders in the window, in the arm its bit is in: converted, net revenue
# in the workspace currency (0 without), and its square (Welch's variance). The customers
# are numbered before they meet the arms' bitmaps (one chunk row each, by its number).
_MONEY = (
    ", money AS MATERIALIZED (SELECT n.n, m.orders, m.v FROM (SELECT profile_id, sum(orders) "
    "AS orders, coalesce(sum(revenue) FILTER (WHERE currency = ANY($5::text[])), 0) AS v "
    "FROM profile.kpi_customer_days WHERE workspace_id = $1 AND day BETWEEN $3 AND $4 GROUP "
    "BY 1) AS m JOIN profile.kpi_numbers n ON n.workspace_id = $1 AND n.profile_id = "
    f"m.profile_id), who AS (SELECT get_bit(arm.control, m.n % {BITS}) = 1 AS control, "
    f"get_bit(arm.control, m.n % {BITS}) + get_bit(arm.treated, m.n % {BITS}) = 1 AS inside, "
    f"m.orders, m.v FROM money m JOIN arm ON arm.chunk = m.n / {BITS}) SELECT control, "
    "count(*) FILTER (WHERE orders > 0), sum(v), sum(v * v) FROM who WHERE inside GROUP BY 1")
_ARMS_ONLY = "SELECT sum(bit_count(treated)), sum(bit_count(control)) FROM arm"


async def crm(conn: AsyncConnection, ws: str, first: date, last: date, segment: str,
              currency: str) -> dict[str, Any]:
    """All treated customers (sent a message in the window, not control-group members)
    against the control group's members whose marketing send was suppressed in the window:
    conversion (an order in the window) with Newcombe's interval, net revenue per customer
    (in the workspace currency) with Welch's. Exact: ORs of the window's day bitmaps, and
    each customer's days."""
    currencies = sorted({currency, ""})
    counts = await fetch(conn, _ARMS + _ARMS_ONLY, ws, segment, first, last)
    sums = {r[0]: r for r in await fetch(conn, _ARMS + _MONEY, ws, segment, first, last,
                                         currencies)}
    rows = []
    for is_control, size in ((False, counts[0][0]), (True, counts[0][1])):
        n = int(size or 0)
        if not n:
            continue
        _, converted, total, squares = sums.get(is_control) or (is_control, 0, 0.0, 0.0)
        mean = float(total) / n
        rows.append({"control": is_control, "n": n, "converted": int(converted),
                     "total": float(total), "mean": mean,
                     "var": max(0.0, float(squares) - n * mean * mean) / (n - 1) if n > 1
                     else None})
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


def _arm(row: Any) -> dict[str, Any]:
    n, converted = (int(row["n"]), int(row["converted"])) if row else (0, 0)
    return {"customers": n, "converted": converted, "conversion": conversion(converted, n),
            "revenue": round(float(row["total"]), 2) if row else 0.0,
            "revenue_per_customer": round(float(row["mean"]), 6) if row else None}


def _sample(row: Any) -> tuple[float, float, int]:
    if row is None:
        return 0.0, 0.0, 0
    return float(row["mean"]), float(row["var"] or 0.0), int(row["n"])
