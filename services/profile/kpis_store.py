"""KPI rollups, written in the batch's own transaction: one statement per table per batch.

The consumer notes each message's facts while it applies the batch (`KpiFacts`); `write`
turns them into rollup rows (counters, distinct-people bitmaps, unique opens and clicks,
touches, orders and their attribution). Redelivery is harmless: the inbox drops repeated
message ids, orders are keyed by order_id, first opens/clicks by message id. `kpi_orders` is
also the register by which the profiles count each order once (domain/orders.py). Never
commits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncConnection

from services.profile import kpis_bits, kpis_uplift
from services.profile.domain.conventions import Conventions
from services.profile.domain.kpi_facts import KpiFacts, Order
from services.profile.domain.kpis import (
    ALL,
    COUNTED_VALUES,
    TOUCH_VALUES,
    Rollup,
    Touch,
    attribute,
    dims_of,
    local_day,
    nps_bucket,
    zone,
)
from services.profile.kpis_uplift import (
    ADD_MONEY,
    BY_LOSER,
    FOLD,
    Money,
    add_days,
    known_control,
)
from services.profile.repository import SEP, columns, fetch, unnest_args
from shared.kafka.errors import DependencyUnavailable


class OrderRace(DependencyUnavailable):
    """A batch's order was stored by another writer after the batch read `known_orders`:
    the profiles counted it too. Retried: the batch runs again and reads it as known."""


# The merge's and the attribution's statements are planned (each plan cached by the
# connection after five runs) with index probes only: the profiles' rows by the tables'
# indexes led by the profile (`*_person`, migration profile_0011), the orders by key by the
# primary key. The plans the planner picked (hash joins: a scan of the whole table per
# batch) were made while the tables were small and kept as they grew: at 20 000 events of
# bench/profile.py they cost ~4 us per event more, and more with every row stored.
# Set for the rest of the transaction (`true`): the batch's statements after them (the
# numbers, the bitmaps and counters, the outbox rows) are probes of primary keys or plain
# inserts, which lose nothing by it, and no round trip sets them back. `_PROBES_GATE` sets
# them as a qual of a statement's final SELECT: a condition on no column is evaluated once,
# before the rows (a one-time filter), whatever the statement returns.
_GUCS = ("enable_seqscan", "enable_hashjoin", "enable_mergejoin", "enable_material")
_PROBES_GATE = "(SELECT " + " || ".join(
    f"set_config('{g}', 'off', true)" for g in _GUCS) + ") IS NOT NULL"
_PROBES_ONLY = "SELECT " + _PROBES_GATE


class Prior(NamedTuple):
    """What a batch reads of the rollups before it applies its messages."""

    stored: set[tuple[str, str]]  # the batch's (workspace, order key)s in kpi_orders already
    reporting: dict[str, set[str]] | None  # reporting segments by workspace; None: not read


async def known_orders(conn: AsyncConnection, keys: set[tuple[str, str]],
                       workspaces: Iterable[str] = ()) -> Prior:
    """Which (workspace, order key) are in `kpi_orders` already: one primary-key probe each
    (the LATERAL form keeps the planner from scanning the table, as repository.owners).
    With `workspaces`, the same statement takes the rebuild lock and reads the reporting
    segments `write` needs (reporting_segments): one round trip for both."""
    if not keys:
        return Prior(set(), None)
    ws, k = columns(keys, 2)
    wanted = sorted(set(workspaces))
    rows = await fetch(
        conn, "SELECT o.workspace_id, o.order_key, false FROM unnest($1::text[], $2::text[]) "
        "AS q(ws, k) CROSS JOIN LATERAL (SELECT workspace_id, order_key FROM "
        "profile.kpi_orders o WHERE o.workspace_id = q.ws AND o.order_key = q.k LIMIT 1) AS o"
        + (" UNION ALL " + _REPORTING.replace("$1", "$3") if wanted else ""),
        ws, k, *([wanted] if wanted else []))
    reporting: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r[2] and r[0] is not None:
            reporting[r[0]].add(r[1])
    return Prior({(r[0], r[1]) for r in rows if not r[2]}, reporting if wanted else None)


# The shared lock a rebuild of the workspace takes exclusively: a batch waits for it.
# UNION ALL runs both branches, so the lock is taken whatever segments there are.
_REPORTING = (
    "SELECT NULL::text, NULL::text, true FROM (SELECT count("
    "pg_advisory_xact_lock_shared(hashtext('profile-kpis:' || w))) FROM "
    "unnest($1::text[]) AS w) AS l UNION ALL SELECT workspace_id, key, true FROM "
    "profile.segments WHERE reporting AND workspace_id = ANY($1::text[])")


async def reporting_segments(conn: AsyncConnection, workspaces: Iterable[str]
                             ) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    wanted = sorted(set(workspaces))
    if wanted:
        for r in await fetch(conn, _REPORTING, wanted):
            if r[0] is not None:
                out[r[0]].add(r[1])
    return out


async def write(conn: AsyncConnection, facts: KpiFacts, convs: dict[str, Conventions],
                live: Callable[[str], str], merges: dict[str, tuple[str, str]],
                members: dict[str, set[str]], moves: list[tuple[str, str | None, str]],
                now: datetime, *, counted: set[tuple[str, str]] | None = None,
                reporting: dict[str, set[str]] | None = None) -> None:
    """Apply one batch's facts. `merges`: loser -> (workspace, survivor); `members`: segment keys by
    profile id after the batch; `moves`: (workspace, from, to) lifecycle changes; `counted`:
    the orders (workspace, key) the profiles counted as new, which the insert must find new;
    `reporting`: the reporting segments of `convs`' workspaces when `known_orders` read
    them (under the rebuild lock), else read here."""
    if not facts and not moves and not merges:
        return
    if reporting is None:
        reporting = await reporting_segments(conn, convs)  # waits while a rebuild runs

    def segs(ws: str, pid: str) -> list[str]:
        keys = reporting.get(ws)
        return sorted(keys & members.get(pid, set())) if keys else []

    r = Rollup()
    money: Money = defaultdict(lambda: [0, 0.0])
    touched, firsts = _deliveries(facts, convs, live, segs, r)
    _refund_money(facts, convs, live, segs, r, money)
    orders = _orders(facts, convs, live, segs, r, money, counted)
    window = await _together(conn, [p for p in (firsts, orders) if p is not None])
    new_orders = orders.done if orders else []
    refunded = await _refunds(conn, facts, convs, r)
    # Orders a new open or click may now claim (up to the click window after it), and every
    # order of a merged profile (the other profile's touches may claim them).
    probes = {(ws, pid, at, at + convs[ws].attribution_click_window)
              for ws, pid, at in touched}
    probes |= {(ws, s, _EVER[0], _EVER[1]) for ws, s in merges.values()}
    moved: list[Any] = []
    gone: list[Any] = []
    updates: list[Any] = []
    if merges or new_orders or probes:
        # The merge's and the attribution's statements are planned with index probes only:
        # the settings came with the batch's first KPI statement (`_together`), if any.
        if not window:
            await fetch(conn, _PROBES_ONLY)
        if merges:
            moved, gone = await repoint(conn, merges)
        updates = await _attribute(conn, convs, new_orders, refunded, sorted(probes), r)
    await _control(conn, facts, convs, live, segs, r)  # after the merge's (its `since` first)
    records = _records(money, new_orders, moved)
    for ws, pid, at, score in facts.nps:
        pid = live(pid)
        day = local_day(at, convs[ws].timezone)
        r.count(ws, day, [ALL], segs(ws, pid), nps_bucket(score))
        r.count(ws, day, [ALL], segs(ws, pid), "nps_responses")
    for ws, old, new in moves:
        r.count(ws, local_day(now, convs[ws].timezone), [ALL], [], f"move:{old or 'none'}>{new}")
    await flush(conn, r, records, gone, merges, _reattributed(updates) if updates else None)


# A new order of the batch: the order (its profile the live one), its local day, its
# reporting segments.
NewOrder = tuple[Order, date, list[str]]
# kpi_money's records of a batch: (workspace, profile id or number, day, currency) ->
# [orders, revenue] added; a profile id is numbered in `flush`.
Records = dict[tuple[str, str | int, date, str], list[Any]]


def _records(money: Money, new_orders: list[NewOrder], moved: list[Any]) -> Records:
    """What the batch added to kpi_customer_days: the refunds (`money`), the new orders, a
    merge's days (off the loser's number, onto the survivor)."""
    out: Records = defaultdict(lambda: [0, 0.0])
    for key, (o, v) in money.items():
        out[key][0] += o
        out[key][1] += v
    for order, day, _seg in new_orders:
        held = out[(order.ws, order.pid, day, order.currency)]
        held[0] += 1
        held[1] += order.revenue
    for ws, _loser, survivor, day, currency, orders, revenue, n in moved:
        for who, sign in ((survivor, 1), (n, -1)):
            if who is not None:
                out[(ws, who, day, currency)][0] += sign * orders
                out[(ws, who, day, currency)][1] += sign * revenue
    return out

_EVER = (datetime(1970, 1, 1, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC))


class Part:
    """One data-modifying part of the batch's first KPI statement (`_together`): its CTEs
    and its answer's row (tag, int[], text[], text[]) given the number of its first
    parameter, its arguments, and what it does with that row (`take`)."""

    def __init__(self, tag: int, sql: Callable[[int], tuple[str, str]], args: list[Any],
                 take: Callable[[Any], None]) -> None:
        self.tag, self.sql, self.args, self.take = tag, sql, args, take
        self.done: list[NewOrder] = []


async def _together(conn: AsyncConnection, parts: list[Part]) -> bool:
    """The parts in one statement (one round trip), which also opens the index-probe window
    (_PROBES_GATE); each part takes its row. Whether it ran (the window is open)."""
    if not parts:
        return False
    ctes: list[str] = []
    selects: list[str] = []
    args: list[Any] = []
    for part in parts:
        cte, select = part.sql(len(args) + 1)
        ctes.append(cte)
        selects.append(f"{select} WHERE {_PROBES_GATE}")
        args += part.args
    rows = {row[0]: row for row in await fetch(
        conn, "WITH " + ", ".join(ctes) + " " + " UNION ALL ".join(selects), *args)}
    for part in parts:
        part.take(rows[part.tag])
    return True


def _deliveries(facts: KpiFacts, convs: dict[str, Conventions], live: Callable[[str], str],
                segs: Callable[[str, str], list[str]], r: Rollup
                ) -> tuple[list[tuple[str, str, datetime]], Part | None]:
    """The outcomes' counters and `reached` people, first opens and clicks, last touches;
    returns the opens' and clicks' (workspace, live profile, time), and the statement's part
    that stores the firsts and touches and counts the new firsts.
    The counters and people are summed per message origin (channel, journey, broadcast,
    template) first and spread over the origin's dimensions once per sum: a batch holds a
    few dozen origins for hundreds of outcomes (the per-fact dictionaries cost ~4 us per
    event of the consumer's CPU in bench/profile.py)."""
    firsts: dict[tuple[str, str, str], tuple[date, Origin, tuple[str, ...]]] = {}
    touches: dict[tuple[str, str, str], tuple[Any, ...]] = {}
    # (workspace, day, channel, journey, broadcast, template, segments, metric or profile)
    counted: dict[tuple[Any, ...], int] = defaultdict(int)
    reached: dict[tuple[Any, ...], int] = defaultdict(int)
    zones: dict[str, Any] = {}
    # (workspace, profile as noted) -> its live profile and segments, looked up once
    who: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {}
    times: list[tuple[str, str, datetime]] = []
    for ws, noted, mid, status, channel, journey, broadcast, template, at in facts.deliveries:
        z = zones.get(ws)
        if z is None:
            z = zones[ws] = zone(convs[ws].timezone)
        day = at.astimezone(z).date()  # local_day
        held_who = who.get((ws, noted))
        if held_who is None:
            pid = live(noted)
            held_who = who[(ws, noted)] = (pid, tuple(segs(ws, pid)))
        pid, seg = held_who
        value = status._value_  # COUNTED_VALUES' key
        metric = COUNTED_VALUES.get(value)
        if metric is not None:
            counted[(ws, day, channel, journey, broadcast, template, seg, metric)] += 1
            if metric == "sent":
                reached[(ws, day, channel, journey, broadcast, template, seg, pid)] += 1
            continue
        kind = TOUCH_VALUES[value]
        times.append((ws, pid, at))
        origin = (channel, journey, broadcast, template)
        if (ws, mid, "open") not in firsts:
            firsts[(ws, mid, "open")] = (day, origin, seg)
        if kind == "click" and (ws, mid, "click") not in firsts:
            firsts[(ws, mid, "click")] = (day, origin, seg)
        key = (ws, mid, kind)
        held = touches.get(key)
        if held is None or at > held[4]:
            touches[key] = (ws, mid, kind, pid, at, channel, journey, broadcast, template)
    dims = _Dims()
    for (ws, day, channel, journey, broadcast, template, seg, metric), n in counted.items():
        r.count(ws, day, dims[(channel, journey, broadcast, template)], seg, metric, n)
    for (ws, day, channel, journey, broadcast, template, seg, pid), n in reached.items():
        r.person(ws, "reached", day, dims[(channel, journey, broadcast, template)], seg, pid, n)
    if not firsts:
        return times, None
    # Every open or click holds a first and a touch: one part for both, the new firsts
    # answered as their positions in the arguments (one int array).
    keys = list(firsts)
    key_cols, touch_cols = columns(keys, 3), columns(touches.values(), 9)

    def sql(first: int) -> tuple[str, str]:
        exprs, _ = unnest_args(first, key_cols, ["text"] * 3)
        texprs, _ = unnest_args(first + 3, touch_cols, _TOUCH_TYPES)
        return (
            "f AS (INSERT INTO profile.kpi_firsts (workspace_id, message_id, kind) SELECT * "
            f"FROM unnest({exprs}) ON CONFLICT DO NOTHING RETURNING workspace_id, message_id, "
            "kind), t AS (INSERT INTO profile.kpi_touches (workspace_id, message_id, kind, "
            "profile_id, at, channel, journey, broadcast, template) SELECT * FROM unnest("
            f"{texprs}) ON CONFLICT (workspace_id, message_id, kind) DO UPDATE SET at = "
            "greatest(kpi_touches.at, excluded.at), profile_id = excluded.profile_id)",
            "SELECT 0, array_agg(a.i), NULL::text[], NULL::text[] FROM f JOIN unnest("
            f"{exprs}) WITH ORDINALITY AS a(w, m, k, i) ON (a.w, a.m, a.k) = (f.workspace_id, "
            "f.message_id, f.kind)")

    def take(row: Any) -> None:
        for i in row[1] or ():
            ws, _mid, kind = keys[i - 1]
            day, origin, seg = firsts[keys[i - 1]]
            r.count(ws, day, dims[origin], seg, "unique_opens" if kind == "open"
                    else "unique_clicks")

    _, key_args = unnest_args(1, key_cols, ["text"] * 3)
    _, touch_args = unnest_args(4, touch_cols, _TOUCH_TYPES)
    return times, Part(0, sql, [*key_args, *touch_args], take)


_TOUCH_TYPES = ["text", "text", "text", "text", "timestamptz", "text", "text", "text", "text"]


Origin = tuple[str, str | None, str | None, str | None]  # channel, journey, broadcast, template


class _Dims(dict[Origin, list[tuple[str, str]]]):
    """dims_of per message origin, computed once per batch."""

    def __missing__(self, origin: Origin) -> list[tuple[str, str]]:
        out = self[origin] = dims_of(*origin)
        return out


async def _control(conn: AsyncConnection, facts: KpiFacts, convs: dict[str, Conventions],
                   live: Callable[[str], str], segs: Callable[[str, str], list[str]],
                   r: Rollup) -> None:
    """Control-group members: known from their first suppressed send, and in the day's,
    week's and month's `control` sets (the CRM uplift's control arm)."""
    first: dict[tuple[str, str], datetime] = {}
    for ws, pid, at in facts.control:
        pid = live(pid)
        r.person(ws, "control", local_day(at, convs[ws].timezone), [ALL], segs(ws, pid), pid)
        first[(ws, pid)] = min(at, first.get((ws, pid), at))
    await known_control(conn, first)


def _orders(facts: KpiFacts, convs: dict[str, Conventions], live: Callable[[str], str],
            segs: Callable[[str, str], list[str]], r: Rollup, money: Money,
            counted: set[tuple[str, str]] | None = None) -> Part | None:
    """The statement's part that inserts the batch's orders; the ones not seen before (by
    order_id) are counted (the part's `done`), and added to their customers' days with
    `money` (the refunds'). They must be the ones the profiles `counted` (known_orders read
    before), else retry."""
    batch: dict[tuple[str, str], NewOrder] = {}  # each key's first order
    for o in facts.orders:
        if (o.ws, o.key) not in batch:
            pid = live(o.pid)
            batch[(o.ws, o.key)] = (o if pid == o.pid else o._replace(pid=pid),
                                    local_day(o.at, convs[o.ws].timezone), segs(o.ws, pid))
    if not batch and not money:
        return None
    rows = [(o.ws, o.key, o.pid, o.at, day, o.revenue, o.currency, SEP.join(seg))
            for o, day, seg in batch.values()]
    args = [*columns(rows, 8), *columns([(*k, *v) for k, v in money.items()], 6)]

    def sql(first: int) -> tuple[str, str]:
        return (_ORDERS.format(*(f"${first + i}" for i in range(14))),
                "SELECT 1, NULL::int[], array_agg(workspace_id::text), "
                "array_agg(order_key::text) FROM ins")

    def take(row: Any) -> None:
        fresh = list(zip(row[2] or (), row[3] or (), strict=True))
        if counted is not None and set(fresh) != counted:
            raise OrderRace("another writer stored one of the batch's orders meanwhile")
        part.done = out = [batch[key] for key in fresh]
        for o, day, seg in out:
            ws = o.ws
            r.count(ws, day, [ALL], seg, "orders", 1, o.currency)
            r.count(ws, day, [ALL], seg, "revenue", o.revenue, o.currency)
            r.person(ws, "customer", day, [ALL], seg, o.pid)

    part = Part(1, sql, args, take)
    return part


# The batch's orders, each once by key; the new ones (`ins`) and the refunds' money
# ({8}..{13}) go to the customers' days. {0}..{13}: the parameters.
_ORDERS = (
    "ins AS (INSERT INTO profile.kpi_orders (workspace_id, order_key, profile_id, at, "
    "day, revenue, currency, segments) SELECT ws, k, p, at, d, v, c, "
    "string_to_array(s, chr(31)) FROM unnest({0}::text[], {1}::text[], {2}::text[], "
    "{3}::timestamptz[], {4}::date[], {5}::float8[], {6}::text[], {7}::text[]) "
    "AS t(ws, k, p, at, d, v, c, s) ON CONFLICT DO NOTHING RETURNING workspace_id, order_key, "
    "profile_id, day, currency, revenue), days AS (" + add_days(
        "SELECT workspace_id, profile_id, day, currency, 1, revenue FROM ins UNION ALL "
        "SELECT * FROM unnest({8}::text[], {9}::text[], {10}::date[], {11}::text[], "
        "{12}::int[], {13}::float8[])") + ")")


def _refund_money(facts: KpiFacts, convs: dict[str, Conventions], live: Callable[[str], str],
                  segs: Callable[[str, str], list[str]], r: Rollup, money: Money) -> None:
    """Refunds count on their own day, and take from their customers' net revenue."""
    for f in facts.refunds:
        pid = live(f.pid)
        day = local_day(f.at, convs[f.ws].timezone)
        money[(f.ws, pid, day, f.currency)][1] -= f.amount
        r.count(f.ws, day, [ALL], segs(f.ws, pid), "refunds", 1, f.currency)
        r.count(f.ws, day, [ALL], segs(f.ws, pid), "refunded", f.amount, f.currency)


async def _refunds(conn: AsyncConnection, facts: KpiFacts, convs: dict[str, Conventions],
                   r: Rollup) -> dict[tuple[str, str], float]:
    """Refunds naming an order: on the order (after the batch's orders are in), and off the
    attributed revenue of the message it is attributed to. Returns the amounts added per
    (workspace, order key)."""
    per_order: dict[tuple[str, str], float] = defaultdict(float)
    for f in facts.refunds:
        if f.order_key:
            per_order[(f.ws, f.order_key)] += f.amount
    if not per_order:
        return per_order
    ws_, keys = columns(per_order, 2)
    rows = await fetch(
        conn, "UPDATE profile.kpi_orders o SET refunded = o.refunded + t.v FROM "
        "unnest($1::text[], $2::text[], $3::float8[]) AS t(ws, k, v) WHERE "
        "o.workspace_id = t.ws AND o.order_key = t.k RETURNING o.workspace_id, o.order_key, "
        "o.currency, o.segments, o.message_id, o.channel, o.journey, o.broadcast, o.template",
        ws_, keys, list(per_order.values()))
    for row in rows:
        if row["message_id"] is None:
            continue  # not attributed: nothing of the attributed revenue to take back
        dims = dims_of(row["channel"], row["journey"], row["broadcast"], row["template"])
        for f in facts.refunds:
            if (f.ws, f.order_key) == (row["workspace_id"], row["order_key"]):
                r.count(f.ws, local_day(f.at, convs[f.ws].timezone), dims, row["segments"],
                        "attributed_refunded", f.amount, row["currency"])
    return per_order


# The orders to (re)decide: those of (workspace, profile) between two times ($1..$4: probed by
# kpi_orders_person, the workspace compared as BY_LOSER does: planned with _PROBES_ONLY); then the
# touches that can claim them or the batch's new orders ($7..$9: workspace, profile, time;
# the rows `write` just inserted, not read again), from the attribution windows before the
# first to the last, per profile, in the same answer: rows with a `kind` are touches.
_ATTRIBUTION = (
    "WITH o AS MATERIALIZED (SELECT o.* FROM profile.kpi_orders o JOIN unnest($1::text[], "
    "$2::text[], $3::timestamptz[], $4::timestamptz[]) AS t(ws, p, lo, hi) ON o.profile_id = "
    "t.p AND o.at BETWEEN t.lo AND t.hi AND o.workspace_id || '' = t.ws), s AS (SELECT a.ws, a.p, "
    "min(a.at - w.back) AS lo, max(a.at) AS hi FROM (SELECT workspace_id, profile_id, at FROM "
    "o UNION ALL SELECT * FROM unnest($7::text[], $8::text[], $9::timestamptz[])) AS a(ws, p, "
    "at) JOIN unnest($5::text[], $6::interval[]) AS w(ws, back) ON w.ws = a.ws GROUP BY 1, 2) "
    "SELECT o.workspace_id, o.profile_id, o.at, o.order_key, o.day, o.revenue, o.currency, "
    "o.refunded, o.segments, o.message_id, NULL::text AS kind, o.channel, o.journey, "
    "o.broadcast, o.template FROM o UNION ALL SELECT t.workspace_id, t.profile_id, t.at, "
    "NULL, NULL, NULL, NULL, NULL, NULL, t.message_id, t.kind, t.channel, t.journey, "
    "t.broadcast, t.template FROM profile.kpi_touches t JOIN s ON t.profile_id = s.p AND "
    "t.at BETWEEN s.lo AND s.hi AND t.workspace_id || '' = s.ws")


async def _attribute(conn: AsyncConnection, convs: dict[str, Conventions],
                     new_orders: list[NewOrder], refunded: dict[tuple[str, str], float],
                     probes: list[tuple[str, str, datetime, datetime]], r: Rollup
                     ) -> list[Any]:
    """(Re)decide the attribution of the new orders (as `_orders` stored them, with the
    batch's refunds of them, `refunded`) and of the orders of (workspace, profile) between
    two times in `probes`; count what moved. Returns the orders whose message changed
    (workspace, order key, message, channel, journey, broadcast, template): stored by
    `_reattributed`'s statement."""
    if not new_orders and not probes:
        return []
    tw, tp, tlo, thi = columns(probes, 4) if probes else ([], [], [], [])
    nw, np_, nat = columns([(o.ws, o.pid, o.at) for o, _d, _s in new_orders], 3) \
        if new_orders else ([], [], [])
    back = {ws: max(c.attribution_click_window, c.attribution_open_window)
            for ws, c in convs.items()}
    orders: list[Any] = []
    found: dict[tuple[str, str], list[Touch]] = defaultdict(list)
    for row in await fetch(conn, _ATTRIBUTION, tw, tp, tlo, thi, list(back),
                           list(back.values()), nw, np_, nat):
        if row["kind"] is None:
            orders.append(row)
        else:
            found[(row["workspace_id"], row["profile_id"])].append(Touch(
                row["message_id"], row["kind"], row["at"], row["channel"], row["journey"],
                row["broadcast"], row["template"]))
    # The new orders as they were stored (unattributed) unless a probe read them already.
    read = {(o["workspace_id"], o["order_key"]) for o in orders}
    orders += [{"workspace_id": o.ws, "profile_id": o.pid, "at": o.at, "order_key": o.key,
                "day": day, "revenue": o.revenue, "currency": o.currency,
                "refunded": refunded.get((o.ws, o.key), 0.0), "segments": seg,
                "message_id": None, "channel": None, "journey": None, "broadcast": None,
                "template": None}
               for o, day, seg in new_orders if (o.ws, o.key) not in read]
    updates = []
    for o in orders:
        ws, conv = o["workspace_id"], convs[o["workspace_id"]]
        best = attribute(o["at"], found.get((ws, o["profile_id"]), []),
                         conv.attribution_click_window, conv.attribution_open_window)
        if (best.message_id if best else None) == o["message_id"]:
            continue
        day = o["day"]
        net = o["revenue"]
        for sign, dims in ((-1, None if o["message_id"] is None else dims_of(
                o["channel"], o["journey"], o["broadcast"], o["template"])),
                (1, None if best is None else dims_of(best.channel, best.journey,
                                                      best.broadcast, best.template))):
            if dims is None:
                continue
            r.count(ws, day, dims, o["segments"], "attributed_orders", sign, o["currency"])
            r.count(ws, day, dims, o["segments"], "attributed_revenue", sign * net,
                    o["currency"])
            if o["refunded"]:
                r.count(ws, day, dims, o["segments"], "attributed_refunded",
                        sign * o["refunded"], o["currency"])
        updates.append((ws, o["order_key"], best.message_id if best else None,
                        best.channel if best else None, best.journey if best else None,
                        best.broadcast if best else None, best.template if best else None))
    return updates


def _reattributed(updates: list[Any]) -> kpis_bits.Before:
    """The orders' new attribution (`_attribute`'s answer) as the CTE `pre` of the batch's
    numbering statement (kpis_bits.number_and_clear), no round trip of its own."""
    def sql(first: int) -> str:
        params = ", ".join(f"${first + i}::text[]" for i in range(7))
        return ("pre AS (UPDATE profile.kpi_orders o SET message_id = t.m, channel = t.c, "
                "journey = t.j, broadcast = t.b, template = t.t FROM unnest(" + params +
                ") AS t(ws, k, m, c, j, b, t) WHERE o.workspace_id = t.ws AND o.order_key = "
                "t.k RETURNING 1)")
    return sql, columns(updates, 7)


COMPACT_EVERY = 64  # batches with money per compaction of their days (kpi_money)
_turn = 0


async def flush(conn: AsyncConnection, r: Rollup, records: Records | None = None,
                gone: list[Any] | None = None,
                merges: dict[str, tuple[str, str]] | None = None,
                before: kpis_bits.Before | None = None) -> None:
    """Add the batch's people (their day bitmaps), counters and kpi_money records to the
    rollups. The people and the records' profiles are numbered in one statement (every
    customer with money has a number), then the merges' losers whose numbers `repoint`
    forgot (`gone`: workspace, loser, number, first and last day) leave their bitmaps and
    their bits become their survivors' people of the batch (a day both were in holds the
    survivor with two facts or more), then one upsert adds the people, counters and records.
    `before`: a statement (kpis_bits.Before) run first, with the numbering.
    The lock order of every batch: orders (`before`), numbers (the losers' in repoint, then
    these and the workspace's counter), then bitmap rows, so no deadlock: the numbering's
    statement clears the losers' bits once its numbers are done (kpis_bits._clearing)."""
    global _turn  # noqa: PLW0603
    number: dict[tuple[str, str], int] = {}
    days: dict[tuple[str, str], tuple[date, date]] = {}
    seen = {(ws, pid, day) for ws, _f, _d, _k, _s, day, pid in r.people}
    seen.update((ws, w, d) for ws, w, d, _c in records or () if isinstance(w, str))
    spans = [(ws, pid, day, day) for ws, pid, day in seen]
    # The survivors' days widened to their losers': every bit moved below is inside them.
    spans += [(ws, (merges or {})[loser][1], lo, hi) for ws, loser, _n, lo, hi in gone or ()]
    for ws, who, lo, hi in spans:
        held = days.get((ws, who))
        days[(ws, who)] = (min(held[0], lo), max(held[1], hi)) if held else (lo, hi)
    if days:
        number, moved = await kpis_bits.number_and_clear(conn, days, gone, before)
    else:  # no people: no merges' bits either (their survivors would be people)
        moved = []
        if before:
            await fetch(conn, f"WITH {before[0](1)} SELECT count(*) FROM pre", *before[1])
    for ws, figure, dim, key, seg, day, _chunk, _n, twice, loser in moved:
        r.people[(ws, figure, dim, key, seg, day, (merges or {})[loser][1])] += \
            2 if twice else 1
    first = 10 if r.people else 1  # the bitmaps' upsert takes $1..$9
    ctes: list[str] = []
    args: list[Any] = []
    if r.counts:
        exprs, args = unnest_args(first, [*columns(r.counts, 7), list(r.counts.values())],
                                  _COUNT_TYPES)
        ctes.append(f"c AS ({_COUNTS.format(exprs)})")
    if records:
        rows = sorted((ws, who if isinstance(who, int) else number[(ws, who)], day, c, *v)
                      for (ws, who, day, c), v in records.items())
        ctes.append(f"m AS ({ADD_MONEY.format(*range(first + len(args), first + len(args) + 6))})")
        args += columns(rows, 6)
    if r.people:
        await kpis_bits.add(conn, r.people, number, also=(", ".join(ctes), args))
    elif ctes:
        await fetch(conn, "WITH " + ", ".join(ctes) + " SELECT 1", *args)
    if records:
        _turn += 1
        if _turn % COMPACT_EVERY == 0:  # a day's rows stay few: one per batch until then
            await kpis_uplift.compact(conn, [(ws, day, c) for ws, _w, day, c in records])


# The counters' upsert; {0}: unnest()'s arguments (repository.unnest_args). Rows in one
# order in every batch (one order of row locks: no deadlock), sorted here in C ("C" collation:
# bytes compared) rather than in Python (~0.14 ms per batch).
_COUNTS = (
    "INSERT INTO profile.kpi_counts (workspace_id, day, dim, key, segment, metric, currency, "
    "value) SELECT * FROM unnest({0}) AS u(w, d, di, k, s, m, c, v) ORDER BY w COLLATE \"C\", "
    "di COLLATE \"C\", k COLLATE \"C\", s COLLATE \"C\", d, m COLLATE \"C\", "
    "c COLLATE \"C\" ON CONFLICT (workspace_id, dim, key, segment, day, metric, currency) DO "
    "UPDATE SET value = kpi_counts.value + excluded.value")
_COUNT_TYPES = ["text", "date", "text", "text", "text", "text", "text", "float8"]


async def repoint(conn: AsyncConnection, merges: dict[str, tuple[str, str]]
                  ) -> tuple[list[Any], list[Any]]:
    """Merged profiles (loser -> (workspace, survivor)): their touches, orders, customer
    days, control membership and bits become the survivor's (a day both were in holds the
    survivor once, with two facts or more: distinct counts stay distinct). Matched by
    profile (BY_LOSER: each table's index led by the profile), and the loser's bits in its
    own days only (kpi_numbers); planned with index probes only (write's _PROBES_ONLY). One
    statement for the tables, which also forgets the losers' numbers (the first of the
    numbers' locks); their bits move in `flush`, with the batch's people.
    Returns the moved customer days and the forgotten numbers."""
    losers = list(merges)
    workspaces, survivors = [w for w, _ in merges.values()], [s for _, s in merges.values()]
    rows = await fetch(conn, _REPOINT, workspaces, losers, survivors)
    gone = [tuple(r[1:6]) for r in rows if r[0]]
    # The losers' moved days: (workspace, loser, survivor, day, currency, orders, revenue,
    # the loser's number or None), for kpi_money; and the losers' forgotten numbers, whose
    # bits `flush` moves.
    number = {(r[0], r[1]): r[2] for r in gone}
    return [(r[1], r[2], r[6], r[4], r[7], r[8], r[9], number.get((r[1], r[2])))
            for r in rows if not r[0]], gone


_REPOINT = (
    "WITH m AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) AS m(w, l, s)), "
    "t AS (UPDATE profile.kpi_touches x SET profile_id = m.s FROM m WHERE " + BY_LOSER +
    "), o AS (UPDATE profile.kpi_orders x SET profile_id = m.s FROM m WHERE " + BY_LOSER +
    "), " + FOLD + ", n AS (DELETE FROM profile.kpi_numbers x USING m WHERE x.workspace_id = "
    "m.w AND x.profile_id = m.l RETURNING x.workspace_id, x.profile_id, x.n, x.first_day, "
    "x.last_day) SELECT true, workspace_id, profile_id, n, first_day, last_day, NULL, NULL, "
    "NULL, NULL FROM n UNION ALL SELECT "
    "false, workspace_id, profile_id, NULL, day, NULL, s, currency, orders, revenue FROM g")


async def forget(conn: AsyncConnection, workspace_id: str, profile_id: str) -> None:
    """Erasure: the person leaves the distinct-people bitmaps (their number is forgotten),
    the touches, the control group and the per-customer days; the anonymous counters
    (orders, revenue, sends) keep what happened."""
    await kpis_bits.clear(conn, [(workspace_id, profile_id)])
    # kpi_touches by its index led by the profile (kpi_touches_person): the workspace, which
    # leads its primary key, compared in a form no index serves (as kpis_uplift.BY_LOSER).
    for table, ws in (("kpi_touches", "workspace_id || ''"), ("kpi_control", "workspace_id")):
        await fetch(conn, f"DELETE FROM profile.{table} WHERE {ws} = $1 AND "  # noqa: S608
                    "profile_id = $2", workspace_id, profile_id)
    days = await fetch(conn, "DELETE FROM profile.kpi_customer_days WHERE workspace_id = $1 "
                       "AND profile_id = $2 RETURNING workspace_id, day, currency",
                       workspace_id, profile_id)
    # Their kpi_money records go too: their days' rows again from the others' days.
    await kpis_uplift.compact(conn, [tuple(d) for d in days])
    await fetch(conn, "UPDATE profile.kpi_orders SET profile_id = 'erased' WHERE "
                "workspace_id = $1 AND profile_id = $2", workspace_id, profile_id)


