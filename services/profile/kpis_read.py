"""The KPI answer, read from the rollups only (never the event history). Never writes."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.profile import kpis_uplift
from services.profile.domain import kpi_figures as fig
from services.profile.domain.conventions import Conventions
from services.profile.domain.kpis import (
    BITS,
    DIMENSIONS,
    interval_start,
    next_start,
    whole_intervals,
)
from services.profile.repository import fetch

BY = ("journey", "broadcast", "template", "channel")
_START = ("CASE $5::text WHEN 'week' THEN day - (extract(isodow FROM day)::int - 1) "
          "WHEN 'month' THEN date_trunc('month', day)::date ELSE day END")


@dataclass(frozen=True)
class Window:
    workspace_id: str
    first: date
    last: date  # inclusive
    interval: str  # day | week | month
    dim: str  # "" or the filtered dimension
    key: str  # "" or its value
    segment: str  # "" or a reporting segment


async def answer_and_crm(engine: AsyncEngine, w: Window, conv: Conventions
                         ) -> tuple[dict[str, Any], dict[str, Any]]:
    """What GET /v1/kpis reads: the answer and `uplift.crm`, at once on two pooled
    connections (independent reads: the slower one's time, not the sum, on two cores)."""
    async def crm() -> dict[str, Any]:
        async with engine.connect() as conn:
            return await kpis_uplift.crm(conn, w.workspace_id, w.first, w.last, w.segment,
                                         await _currency(conn, w, conv))

    async def main() -> dict[str, Any]:
        async with engine.connect() as conn:
            return await answer(conn, w, conv)

    out, crm_figures = await asyncio.gather(main(), crm())
    return out, crm_figures


async def _currency(conn: AsyncConnection, w: Window, conv: Conventions) -> str:
    """The answer's `sales.currency` (fig.main_currency of the window's orders) or ""."""
    if conv.currency:
        return conv.currency
    rows = await fetch(
        conn, "SELECT currency, sum(value) FROM profile.kpi_counts WHERE workspace_id = $1 "
        "AND segment = $2 AND day BETWEEN $3 AND $4 AND dim = '' AND key = '' AND metric = "
        "'orders' GROUP BY 1", w.workspace_id, w.segment, w.first, w.last)
    return fig.main_currency({"orders": {r[0]: float(r[1]) for r in rows}}, None)


async def answer(conn: AsyncConnection, w: Window, conv: Conventions) -> dict[str, Any]:
    await kpis_uplift.read_settings(conn)
    sums = await _counts(conn, w)
    states = await _states(conn, w)
    spans = _series_spans(w)  # each series entry's days inside the window
    if _fits(_days_read(w, spans), await _chunks(conn, w.workspace_id)):
        people, (previous, kept), kept_by, cohort_rows = await _from_days(conn, w, spans)
    else:  # a long window: the ORs in Postgres (the day rows would not fit in memory)
        people = await _people(conn, w)
        previous, kept = await _retention(conn, w)
        cohort_rows = await _cohorts(conn, w)
        kept_by = await _retention_series(conn, w, [(lo, end) for _, lo, end in spans])
    main = fig.main_currency(sums.get((None, "", ""), {}), conv.currency)
    total_state = _last_state(states, w.first, w.last)
    totals = _groups(sums, people, None, w, main, total_state,
                     _new_profiles(states, w.first, w.last))
    totals["retention"] = fig.retention(previous, kept) | {"cohorts": fig.cohorts(cohort_rows)}
    series = []
    cohort_of = {c["month"]: c for c in totals["retention"]["cohorts"]}
    for start, lo, end in spans:
        entry = {"start": start.isoformat()} | _groups(
            sums, people, start, w, main, _last_state(states, lo, end),
            _new_profiles(states, lo, end))
        entry["retention"] = fig.retention(*kept_by.get(lo, (0, 0)))
        if w.interval == "month":  # the cohort of customers whose first order is this month
            entry["retention"]["cohort"] = cohort_of.get(start.strftime("%Y-%m"))
        series.append(entry)
    by: dict[str, dict[str, Any]] = {dim: {} for dim in BY}
    for (start_, dim, key), m in sums.items():
        if start_ is None and dim in by and dim != "":
            all_revenue = totals["sales"]["revenue"]
            by[dim][key] = {"communication": fig.communication(m, None, None),
                            "attribution": fig.attribution(m, main, all_revenue)}
    return {"window": {"from": w.first.isoformat(), "to": w.last.isoformat(),
                       "interval": w.interval, "timezone": conv.timezone,
                       "filters": {k: v for k, v in ((w.dim, w.key), ("segment", w.segment))
                                   if k and v},
                       "whole_intervals": whole_intervals(w.first, w.last, w.interval),
                       "distinct": "exact"},
            "totals": totals, "series": series, "by": by}


def _groups(sums: dict[tuple[date | None, str, str], fig.Sums],
            people: dict[tuple[date | None, str], tuple[int, int]], start: date | None,
            w: Window, main: str, state: dict[str, Any] | None,
            new_profiles: int | None) -> dict[str, Any]:
    scoped = sums.get((start, w.dim, w.key), {})
    everyone = sums.get((start, "", ""), {})
    reached = people.get((start, "reached"), (0, 0))[0]
    customers, repeaters = people.get((start, "customer"), (0, 0))
    base = dict(state["base"]) if state else None
    if base is not None:
        base["new_profiles"] = new_profiles
    sales = fig.sales(everyone, main, customers, repeaters)
    if state:
        sales["active_customers"] = state["active_customers"]
        sales["active_share"] = fig.ratio(state["active_customers"], state["customers"])
    else:
        sales["active_customers"] = sales["active_share"] = None
    return {"base": base,
            "communication": fig.communication(scoped, reached,
                                               base["profiles"] if base else None),
            "sales": sales,
            "attribution": fig.attribution(scoped, main, sales["revenue"]),
            "lifecycle": {"stages": state["lifecycle"] if state else None,
                          "moves": fig.moves(everyone)},
            "value": state["value"] if state else None,
            "nps": fig.nps(everyone)}


async def _counts(conn: AsyncConnection, w: Window
                  ) -> dict[tuple[date | None, str, str], fig.Sums]:
    """(interval start | None for the window, dim, key) -> metric -> currency -> sum. Per
    interval only what the series shows (everyone, and the filtered dimension's key: an
    index range each); for the window every dimension's keys (`by`), summed in Postgres."""
    series = await fetch(
        conn, f"SELECT {_START} AS start, dim, key, metric, currency, sum(value) "  # noqa: S608
        "FROM profile.kpi_counts WHERE workspace_id = $1 AND segment = $2 AND day BETWEEN $3 "
        "AND $4 AND ((dim = '' AND key = '') OR (dim = $6 AND key = $7)) GROUP BY 1, 2, 3, 4, 5",
        w.workspace_id, w.segment, w.first, w.last, w.interval, w.dim, w.key)
    window = await fetch(
        conn, "SELECT NULL::date, dim, key, metric, currency, sum(value) FROM profile.kpi_counts "
        "WHERE workspace_id = $1 AND segment = $2 AND day BETWEEN $3 AND $4 AND "
        "dim = ANY($5::text[]) GROUP BY 2, 3, 4, 5",
        w.workspace_id, w.segment, w.first, w.last, list({"", w.dim, *BY}))
    out: dict[tuple[date | None, str, str], fig.Sums] = {}
    for start, dim, key, metric, currency, value in [*series, *window]:
        bucket = out.setdefault((start, dim, key), defaultdict(lambda: defaultdict(float)))
        bucket[metric][currency] += value
    return out


# A figure's day bitmaps in the series' spans of days ($5 labels of $6 days: each day of
# the window with its span's label; the spans tile the window; a hash join, not a range):
# per label and chunk the OR of the days (who), and who counted twice or more: twice in a
# day, or in two different days (in a day's bits and in the OR of the span's days before).
# The window's (label -1) from the same pass: the OR of the spans' rows, twice if twice in
# a span or in two spans.
_SPANS = (
    "WITH s AS (SELECT * FROM unnest($5::int[], $6::date[]) AS s(label, day)), d AS (SELECT "
    "s.label, b.figure, b.chunk, b.bits, b.twice, bit_or(b.bits) OVER (PARTITION "
    "BY s.label, b.figure, b.chunk ORDER BY b.day ROWS BETWEEN UNBOUNDED PRECEDING AND "
    "1 PRECEDING) AS before FROM profile.kpi_bits b JOIN s ON b.day = s.day "
    "WHERE b.workspace_id = $1 AND b.segment = $2 AND ((b.figure = 'reached' AND b.dim = $3 "
    "AND b.key = $4) OR (b.figure = 'customer' AND b.dim = '' AND b.key = '')) AND b.day "
    "BETWEEN $7 AND $8), u AS MATERIALIZED (SELECT label, figure, chunk, bit_or(bits) AS who, "
    "bit_or(twice | (bits & coalesce(before, bits # bits))) AS again FROM d GROUP BY 1, 2, 3), "
    "v AS (SELECT figure, chunk, who, again | (who & coalesce(bit_or(who) OVER (PARTITION BY "
    "figure, chunk ORDER BY label ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), "
    "who # who)) AS again FROM u), w AS (SELECT figure, chunk, bit_or(who) AS who, "
    "bit_or(again) AS again FROM v GROUP BY 1, 2) "
    "SELECT label, figure, sum(bit_count(who)), coalesce(sum(bit_count(again)), 0) FROM u "
    "GROUP BY 1, 2 UNION ALL SELECT -1, figure, sum(bit_count(who)), "
    "coalesce(sum(bit_count(again)), 0) FROM w GROUP BY 1, 2")


# The answer's bitmaps in one statement. The window's `reached` people ($3/$4: the
# filtered dimension and key, or everyone) as counts: per series entry ('n', its start:
# $10 is the interval) and for the window ('w'), each the OR of its days per chunk. The
# `customer` days $7..$8 as rows ('c'), each day's packed as one value (each row's bits as
# BITS / 8 bytes, varbit_send less its 4-byte length; its chunk in `chunks`, in the same
# order: every aggregate of a group meets its rows in one order), with their `twice` rows
# that have a bit set (`twice`, its chunks) and the chunks whose row has no `twice` (NULL:
# such a row adds no repeater); then per chunk the OR of the customer days before $7
# ('p') and of $9..$5 - 1 ('q': the window's previous window).
_REACHED = (
    "FROM profile.kpi_bits WHERE workspace_id = $1 AND figure = 'reached' AND dim = $3 AND "
    "key = $4 AND segment = $2 AND day BETWEEN $5 AND $6")
_DAYS = (
    "SELECT 'n', start, NULL::int[], NULL::bytea, NULL::int[], NULL::bytea, NULL::int[], "
    "sum(bit_count(who)) FROM (SELECT CASE $10::text WHEN 'week' THEN day - (extract(isodow "
    "FROM day)::int - 1) WHEN 'month' THEN date_trunc('month', day)::date ELSE day END AS "
    f"start, chunk, bit_or(bits) AS who {_REACHED} GROUP BY 1, 2) e GROUP BY start UNION ALL "
    "SELECT 'w', NULL, NULL, NULL, NULL, NULL, NULL, sum(bit_count(who)) FROM (SELECT chunk, "
    f"bit_or(bits) AS who {_REACHED} GROUP BY chunk) e HAVING count(*) > 0 UNION ALL "
    "SELECT 'c', day, array_agg(chunk), string_agg(substr(varbit_send("
    "bits), 5), ''::bytea), array_agg(chunk) FILTER (WHERE bit_count(twice) > 0), "
    "string_agg(substr(varbit_send(twice), 5), ''::bytea) FILTER (WHERE bit_count(twice) > 0), "
    "array_agg(chunk) FILTER (WHERE twice IS NULL), NULL FROM profile.kpi_bits WHERE "
    "workspace_id = $1 AND figure = 'customer' AND dim = '' AND key = '' AND segment = $2 AND "
    "day BETWEEN $7 AND $8 GROUP BY day UNION ALL SELECT x.k, NULL, array_agg(s.chunk), "
    "string_agg(substr(varbit_send(x.bits), 5), ''::bytea), NULL, NULL, NULL, NULL FROM "
    "(SELECT chunk, bit_or(bits) FILTER (WHERE day < $7) AS p, bit_or(bits) FILTER (WHERE "
    "day >= $9 AND day < $5) AS q FROM profile.kpi_bits WHERE workspace_id = $1 AND figure = "
    "'customer' AND dim = '' AND key = '' AND segment = $2 AND day < greatest($7, $5) GROUP "
    "BY chunk) s CROSS JOIN LATERAL (VALUES ('p', s.p), ('q', s.q)) AS x(k, bits) WHERE "
    "x.bits IS NOT NULL GROUP BY x.k")
# The most customer day rows (1 KB each; their `twice` at most as many again) one answer
# brings into the process (_from_days: from the earlier of its first month and its first
# series entry's previous span, to the end of its last month, times the workspace's chunks
# of numbers): 200 days at 128 chunks (1 M profiles numbered), ~25 MB. A longer window, or
# a bigger workspace, ORs in Postgres (_people, _retention, _retention_series, _cohorts).
ROWS_IN_PROCESS = 200 * 128
_WORDS = BITS // 64  # a row as uint64 words


def _bounds(w: Window, spans: list[tuple[date, date, date]]) -> tuple[date, date]:
    """The customer days _from_days reads one by one: from the earliest of the window's
    first month and its series entries' previous spans, to the end of its last month."""
    lo = min([interval_start(w.first, "month"),
              *[lo - (hi - lo + timedelta(days=1)) for _, lo, hi in spans]])
    return lo, next_start(interval_start(w.last, "month"), "month") - timedelta(days=1)


def _days_read(w: Window, spans: list[tuple[date, date, date]]) -> int:
    lo, hi = _bounds(w, spans)
    return (hi - lo).days + 1


def _fits(days: int, chunks: int) -> bool:
    """Whether _from_days may bring `days` customer days of `chunks` rows into the process."""
    return days * max(chunks, 1) <= ROWS_IN_PROCESS


async def _chunks(conn: AsyncConnection, ws: str) -> int:
    """The workspace's chunks of numbers (each a row per figure and day)."""
    rows = await fetch(conn, "SELECT next FROM profile.kpi_number_next WHERE workspace_id = $1",
                       ws)
    return -(-int(rows[0][0]) // BITS) if rows else 0


def _count(grid: np.ndarray) -> int:
    return int(np.bitwise_count(grid).sum())


def _grid(width: int, chunks: list[int], data: bytes) -> np.ndarray:
    """One day's rows (their chunks, their bytes) as a (chunk, word) grid: a view of the
    bytes when the day has every chunk (in order: one row per chunk), else a copy."""
    rows = np.frombuffer(data, np.uint64).reshape(-1, _WORDS)
    if len(chunks) == width and chunks[0] == 0 and chunks[-1] == width - 1:
        return rows
    out = np.zeros((width, _WORDS), np.uint64)
    out[chunks] = rows
    return out


async def _from_days(conn: AsyncConnection, w: Window, spans: list[tuple[date, date, date]]
                     ) -> tuple[dict[tuple[date | None, str], tuple[int, int]], tuple[int, int],
                                dict[date, tuple[int, int]], list[tuple[str, int, int]]]:
    """What _people, _retention, _retention_series and _cohorts answer (the same figures,
    exact, the same ORs), from the day bitmaps read once (_DAYS) and OR-ed here, each day
    a (chunk, word) grid of uint64."""
    lo, hi = _bounds(w, spans)
    length = w.last - w.first + timedelta(days=1)
    rows = await fetch(conn, _DAYS, w.workspace_id, w.segment, w.dim, w.key, w.first, w.last,
                       lo, hi, w.first - length, w.interval)
    width = max((max(r[2]) + 1 for r in rows if r[2]), default=0)
    zero = np.zeros((width, _WORDS), np.uint64)  # never written
    people: dict[tuple[date | None, str], tuple[int, int]] = {
        (r[1], "reached"): (int(r[7]), 0) for r in rows if r[0] in ("n", "w")}
    cust: dict[date, np.ndarray] = {}
    twice: dict[date, tuple[list[int], np.ndarray]] = {}  # the rows with a bit set
    no_twice: dict[date, list[int]] = {}  # chunks whose row has no `twice`: no repeater
    rows_of: dict[date, list[int]] = {}  # the chunks that have a row that day
    before = {"p": zero, "q": zero}
    for kind, day, chunks, bits, t_chunks, t_bits, nulls, _n in rows:
        if kind in ("n", "w"):
            continue
        if kind == "c":
            cust[day], rows_of[day] = _grid(width, chunks, bits), chunks
            if t_chunks:
                twice[day] = (t_chunks, np.frombuffer(t_bits, np.uint64).reshape(-1, _WORDS))
            if nulls:
                no_twice[day] = nulls
        else:
            before[kind] = _grid(width, chunks, bits)

    def who(first: date, last: date) -> np.ndarray:  # the customers of first..last
        found = [cust[d] for d in (first + timedelta(days=i)
                                   for i in range((last - first).days + 1)) if d in cust]
        if not found:
            return zero
        out = found[0].copy()  # the days' grids are read-only views of the rows sent
        for day in found[1:]:
            out |= day
        return out

    kept_by: dict[date, tuple[int, int]] = {}
    all_who, all_again = zero.copy(), zero.copy()
    for start, first, last in spans:
        # who is in the entry, and who counted twice: twice in a day, or in a day and an
        # earlier day of the entry. A chunk's row without `twice` adds no repeater (a NULL
        # in Postgres), nor does the entry's in that chunk if none of its rows has one.
        c, again = zero.copy(), zero.copy()
        has = np.zeros(width, bool)
        for i in range((last - first).days + 1):
            day = first + timedelta(days=i)
            bits = cust.get(day)
            if bits is None:
                continue
            seen = bits & c
            if day in twice:
                t_chunks, t_rows = twice[day]
                seen[t_chunks] |= t_rows
            if day in no_twice:
                seen[no_twice[day]] = 0
            again |= seen
            c |= bits
            if day in no_twice:  # the entry's chunks with a row that has `twice`
                valid = np.zeros(width, bool)
                valid[rows_of[day]] = True
                valid[no_twice[day]] = False
                has |= valid
            else:
                has[rows_of[day]] = True
        people[(start, "customer")] = (_count(c), _count(again))
        # the window's repeaters: an entry's, or in an entry and an earlier one
        seen = again | (c & all_who)
        seen[~has] = 0
        all_again |= seen
        all_who |= c
        previous = who(first - (last - first + timedelta(days=1)), first - timedelta(days=1))
        kept_by[first] = (_count(previous), _count(previous & c))
    people[(None, "customer")] = (_count(all_who), _count(all_again))
    retention = (_count(before["q"]), _count(before["q"] & all_who))
    # cohorts: a month's customers less those of every month before (from the rollups'
    # first day), and which of them order in each later month up to the window's last
    months, month = [], interval_start(w.first, "month")
    while month <= w.last:
        months.append((month, who(month, next_start(month, "month") - timedelta(days=1))))
        month = next_start(month, "month")
    cohort_rows = []
    for i, (first_month, bits) in enumerate(months):
        cohort = bits & ~(before["p"] | who(lo, first_month - timedelta(days=1)))
        for later, later_bits in months[i:]:
            n = _count(cohort & later_bits)
            if n:
                cohort_rows.append((first_month.strftime("%Y-%m"),
                                    (later.year - first_month.year) * 12 + later.month
                                    - first_month.month, n))
    return people, retention, kept_by, cohort_rows


def _series_spans(w: Window) -> list[tuple[date, date, date]]:
    """Each series entry: (its start, its first and last day inside the window)."""
    spans = []
    start = interval_start(w.first, w.interval)
    while start <= w.last:
        spans.append((start, max(start, w.first),
                      min(next_start(start, w.interval) - timedelta(days=1), w.last)))
        start = next_start(start, w.interval)
    return spans


async def _people(conn: AsyncConnection, w: Window
                  ) -> dict[tuple[date | None, str], tuple[int, int]]:
    """(interval start | None for the window, figure) -> (distinct people, people with two
    facts or more): the OR of the day bitmaps of each series entry's days in the window and
    of the window's (exact for every window), each day row read once."""
    spans = _series_spans(w)
    days = [(label, lo + timedelta(days=i)) for label, (_, lo, hi) in enumerate(spans)
            for i in range((hi - lo).days + 1)]
    rows = await fetch(conn, _SPANS, w.workspace_id, w.segment, w.dim, w.key,
                       [label for label, _ in days], [day for _, day in days], w.first, w.last)
    return {(spans[label][0] if label >= 0 else None, figure): (int(n), int(twice))
            for label, figure, n, twice in rows}


async def _retention(conn: AsyncConnection, w: Window) -> tuple[int, int]:
    """Customers of the previous window of equal length, and how many of them ordered in
    this one (both exact, over the day bitmaps)."""
    return (await _retention_spans(conn, w, [(w.first, w.last)])).get(w.first, (0, 0))


async def _retention_series(conn: AsyncConnection, w: Window, spans: list[tuple[date, date]]
                            ) -> dict[date, tuple[int, int]]:
    """`_retention` for each series entry at once: its days in the window against as many
    days before them; first day -> (customers before, of them ordering again)."""
    return await _retention_spans(conn, w, spans)


async def _retention_spans(conn: AsyncConnection, w: Window, spans: list[tuple[date, date]]
                           ) -> dict[date, tuple[int, int]]:
    if not spans:
        return {}
    los, his, prevs = ([lo for lo, _ in spans], [hi for _, hi in spans],
                       [lo - (hi - lo + timedelta(days=1)) for lo, hi in spans])
    rows = await fetch(
        conn, "WITH i AS (SELECT * FROM unnest($3::date[], $4::date[], $5::date[]) AS "
        "i(lo, hi, prev)), x AS (SELECT i.lo, b.chunk, bit_or(b.bits) FILTER (WHERE "
        "b.day < i.lo) AS prev, bit_or(b.bits) FILTER (WHERE b.day >= i.lo) AS cur FROM "
        "profile.kpi_bits b JOIN i ON b.day BETWEEN i.prev AND i.hi WHERE b.workspace_id = "
        "$1 AND b.segment = $2 AND b.figure = 'customer' AND b.dim = '' AND b.key = '' AND "
        "b.day BETWEEN $6 AND $7 GROUP BY 1, 2) SELECT lo, coalesce(sum(bit_count(prev)), 0), "
        "coalesce(sum(bit_count(prev & cur)), 0) FROM x GROUP BY 1",
        w.workspace_id, w.segment, los, his, prevs, min(prevs), max(his))
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


async def _cohorts(conn: AsyncConnection, w: Window) -> list[tuple[str, int, int]]:
    """Customers whose first order month (as far as the rollups go) is one of the window's
    months, and in which later months (up to the window's last) they ordered: month ORs of
    the day bitmaps, a cohort being its month less every month before."""
    rows = await fetch(
        conn, "WITH m AS (SELECT date_trunc('month', day)::date AS month, chunk, bit_or(bits) "
        "AS bits FROM profile.kpi_bits WHERE workspace_id = $1 AND segment = $2 AND figure = "
        "'customer' AND dim = '' AND key = '' AND day < (date_trunc('month', $4::date) + "
        "interval '1 month')::date GROUP BY 1, 2), f AS (SELECT month, chunk, bits & "
        "~coalesce(bit_or(bits) OVER (PARTITION BY chunk ORDER BY month ROWS BETWEEN "
        "UNBOUNDED PRECEDING AND 1 PRECEDING), bits # bits) AS cohort FROM m) SELECT "
        "to_char(f.month, 'YYYY-MM'), ((extract(year FROM m.month) - extract(year FROM "
        "f.month)) * 12 + extract(month FROM m.month) - extract(month FROM f.month))::int, "
        "sum(bit_count(f.cohort & m.bits)) FROM f JOIN m ON m.chunk = f.chunk AND "
        "m.month >= f.month WHERE f.month >= date_trunc('month', $3::date) GROUP BY 1, 2 "
        "HAVING sum(bit_count(f.cohort & m.bits)) > 0",
        w.workspace_id, w.segment, w.first, w.last)
    return [(r[0], int(r[1]), int(r[2])) for r in rows]


async def _states(conn: AsyncConnection, w: Window) -> dict[date, dict[str, Any]]:
    """End-of-day snapshots in the window, and the last one before it."""
    rows = await fetch(
        conn, "(SELECT day, figures FROM profile.kpi_state WHERE workspace_id = $1 AND "
        "segment = $2 AND day BETWEEN $3 AND $4) UNION ALL (SELECT day, figures FROM "
        "profile.kpi_state WHERE workspace_id = $1 AND segment = $2 AND day < $3 "
        "ORDER BY day DESC LIMIT 1)", w.workspace_id, w.segment, w.first, w.last)
    return {r[0]: r[1] for r in rows}


def _last_state(states: dict[date, dict[str, Any]], first: date, last: date
                ) -> dict[str, Any] | None:
    """The state at the end of first..last: the last snapshot taken on or before `last`."""
    days = [d for d in states if d <= last]
    return states[max(days)] if days else None


def _new_profiles(states: dict[date, dict[str, Any]], first: date, last: date) -> int | None:
    days = [d for d in states if first <= d <= last]
    return sum(int(states[d]["base"]["new_profiles"]) for d in days) if days else None


__all__ = ["DIMENSIONS", "Window", "answer"]
