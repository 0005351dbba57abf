"""The distinct-people bitmaps (`kpi_bits`), written in the consumer's batch transaction.

Each profile with a people fact has a dense number per workspace (`kpi_numbers`, assigned on
its first fact); a figure's people of one local day are one bit string per chunk of `BITS`
numbers (bit n % BITS of chunk n // BITS), and for `customer` a second one of the people
with two facts or more that day (`twice`). Weeks, months and any window are ORs of days
(services/profile/kpis_read.py). Never commits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date
from operator import itemgetter
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection

from services.profile.domain.kpis import BITS
from services.profile.repository import SEP, columns, fetch

# (workspace, figure, dim, key, segment, local day, profile id) -> facts
People = dict[tuple[str, str, str, str, str, date, str], int]
TWICE = ("customer",)  # the figures whose repeaters are read (sales.repeat_rate)

# The numbers' workspaces and profile ids go as one SEP-joined text each, not arrays
# (asyncpg checks and encodes a text array's elements one by one in Python).
# Numbers of the batch's profiles, in one statement: the known ones (their first..last day
# widened to the batch's days) and the next numbers of each workspace for the new ones
# (the counter row serialises batches that number people of one workspace). Each profile is
# one probe of the primary key (LATERAL: the planner never scans the table for it), and no
# join of the statement's own rows follows: the answer is rows of arrays, not a row per
# profile to decode: tag 0, the known profiles' positions in the arguments (from 1) and
# numbers; tag 1, the inserted numbers, workspaces and profiles. A profile another batch
# numbered meanwhile comes back without one: `_KNOWN` then.
# `{before}`: a CTE `pre` (RETURNING rows) the numbering waits for, `{after}`: CTEs run once
# the numbering is done (its rows locked: the lock order of a batch, kpis_store.flush),
# `{more}`: their answer's rows.
_NUMBERS = (
    "WITH {before}t AS (SELECT * FROM unnest(string_to_array($1, chr(31)), string_to_array($2, "
    "chr(31)), $3::date[], $4::date[]) WITH ORDINALITY AS t(ws, pid, lo, hi, i)), k AS "
    "(SELECT t.*, k.n, t.lo < k.first_day OR t.hi > k.last_day AS wider FROM t LEFT JOIN "
    "LATERAL (SELECT n, first_day, last_day FROM profile.kpi_numbers k WHERE k.workspace_id = "
    "t.ws AND k.profile_id = t.pid LIMIT 1) AS k ON true), u AS (UPDATE profile.kpi_numbers x "
    "SET first_day = least(x.first_day, k.lo), last_day = greatest(x.last_day, k.hi) FROM k "
    "WHERE k.wider AND x.workspace_id = k.ws AND x.profile_id = k.pid{wait} RETURNING 1), new "
    "AS (SELECT ws, pid, lo, hi, row_number() OVER (PARTITION BY ws ORDER BY pid) - 1 AS r, "
    "count(*) OVER (PARTITION BY ws) AS c FROM k WHERE k.n IS NULL{wait}), nx AS (INSERT INTO "
    "profile.kpi_number_next (workspace_id, next) SELECT DISTINCT ws, c FROM new ON CONFLICT "
    "(workspace_id) DO UPDATE SET next = kpi_number_next.next + excluded.next RETURNING "
    "workspace_id, next), ins AS (INSERT INTO profile.kpi_numbers (workspace_id, profile_id, "
    "n, first_day, last_day) SELECT new.ws, new.pid, nx.next - new.c + new.r, new.lo, new.hi "
    "FROM new JOIN nx ON nx.workspace_id = new.ws ON CONFLICT DO NOTHING RETURNING "
    "workspace_id, profile_id, n){after} SELECT 0, array_agg(i), array_agg(n), NULL::text[], "
    "NULL::text[], NULL::text[], NULL::text[], NULL::text[], NULL::date[], NULL::int[] FROM k "
    "WHERE n IS NOT NULL UNION ALL SELECT 1, NULL, array_agg(n), array_agg(workspace_id::text), "
    "array_agg(profile_id::text), NULL, NULL, NULL, NULL, NULL FROM ins{more}")
_WAIT_BEFORE = " AND (SELECT count(*) FROM pre) >= 0"  # an InitPlan: `pre` runs to its end first
_CLEARED_ROWS = (
    " UNION ALL SELECT 2, array_agg(chunk), array_agg(n), array_agg(workspace_id::text), "
    "array_agg(figure::text), array_agg(dim::text), array_agg(key::text), "
    "array_agg(segment::text), array_agg(day), array_agg(twice) FROM old")
_KNOWN = (
    "SELECT k.workspace_id, k.profile_id, k.n FROM profile.kpi_numbers k JOIN unnest("
    "$1::text[], $2::text[]) AS t(ws, pid) ON k.workspace_id = t.ws AND k.profile_id = t.pid")
# OR the batch's bits in; a person already in the day (or twice in the batch) is twice.
_ADD = (
    "INSERT INTO profile.kpi_bits (workspace_id, figure, dim, key, segment, day, chunk, bits, "
    "twice) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], "
    f"$6::date[], $7::int[], $8::bit({BITS})[], $9::bit({BITS})[]) ON CONFLICT "
    "(workspace_id, figure, dim, key, segment, day, chunk) DO UPDATE SET twice = "
    "kpi_bits.twice | (kpi_bits.bits & excluded.bits) | excluded.twice, "
    "bits = kpi_bits.bits | excluded.bits")
# Profiles' bits cleared in every row of their days that has them: the CTEs `c` (the numbers:
# workspace, number, first and last day), `old` (the rows as they were, one per number they
# hold) and `up` (one update per row, whichever of the numbers it holds); parameters from
# `$first` (_clear_args). The mask is an OR of one-bit strings (B'0' zero-padded to BITS,
# folded once per plan): profile.kpi_bitmap (string building, then a cast of 8192
# characters) cost ~90 us per row against ~4. `wait`: a condition `old` waits on.
def _clearing(first: int, wait: str = "") -> str:
    ws, n, lo, hi, bits = (f"${first + i}" for i in range(5))
    return (
        f"c AS (SELECT * FROM unnest({ws}::text[], {n}::int[], {lo}::date[], {hi}::date[]) "
        "AS c(ws, n, lo, hi)), old AS (SELECT b.workspace_id, b.figure, b.dim, b.key, "
        f"b.segment, b.day, b.chunk, c.n, coalesce(get_bit(b.twice, c.n % {bits}), 0) AS "
        f"twice FROM profile.kpi_bits b JOIN c ON b.workspace_id = c.ws AND b.chunk = c.n / "
        f"{bits} AND b.day BETWEEN c.lo AND c.hi WHERE get_bit(b.bits, c.n % {bits}) = 1"
        f"{wait}), m AS (SELECT workspace_id, figure, dim, key, segment, day, chunk, "
        f"~bit_or(set_bit(B'0'::bit({BITS}), n % {bits}, 1)) AS keep FROM old GROUP BY 1, 2, "
        "3, 4, 5, 6, 7), up AS (UPDATE profile.kpi_bits b SET bits = b.bits & m.keep, twice = "
        "b.twice & m.keep FROM m WHERE (b.workspace_id, b.figure, b.dim, b.key, b.segment, "
        "b.day, b.chunk) = (m.workspace_id, m.figure, m.dim, m.key, m.segment, m.day, "
        "m.chunk))")


_CLEAR = "WITH " + _clearing(1) + " SELECT * FROM old"
# In the numbering statement: after its numbers' rows and counter are locked.
_CLEARED = ", " + _clearing(5, " AND (SELECT count(*) FROM u) + (SELECT count(*) FROM nx) + "
                            "(SELECT count(*) FROM ins) >= 0")


def _clear_args(found: list[Any]) -> list[Any]:
    """_clearing's parameters for FORGET's rows (workspace, profile, n, first, last day)."""
    return [[r[0] for r in found], [r[2] for r in found], [r[3] for r in found],
            [r[4] for r in found], BITS]


def _with_profiles(found: list[Any], rows: Iterable[tuple[Any, ...]]) -> list[Any]:
    """`old`'s rows (workspace_id, figure, dim, key, segment, day, chunk, n, twice) with the
    profile each number was (FORGET's rows `found`)."""
    pid_of = {(r[0], r[2]): r[1] for r in found}
    return [(*r, pid_of[(r[0], r[7])]) for r in rows]


_BIT = [0x80 >> i for i in range(8)]  # bit i of a byte, from its most significant


def bitmap(offsets: Iterable[int]) -> asyncpg.BitString:
    b = bytearray(BITS // 8)
    for o in offsets:
        b[o >> 3] |= _BIT[o & 7]
    return asyncpg.BitString.frombytes(bytes(b), BITS)


_FIRST = itemgetter(0)


# A CTE the numbering statement runs first: its text given the number of its first parameter
# (named `pre`, with RETURNING rows), and its arguments.
Before = tuple[Callable[[int], str], list[Any]]


async def number_and_clear(conn: AsyncConnection,
                           days: dict[tuple[str, str], tuple[date, date]],
                           gone: list[Any] | None = None, before: Before | None = None
                           ) -> tuple[dict[tuple[str, str], int], list[Any]]:
    """(workspace, profile) -> its number, assigning the next ones to new profiles; each
    profile's first..last day widened to (first, last) of `days`. In the same statement:
    `before` first, then the bits of numbers forgotten already (`gone`: FORGET's rows)
    cleared. Returns the numbers and the cleared rows (`clear`'s)."""
    if not days:
        return {}, await _clear(conn, gone or [])
    keys = list(days)
    lo, hi = columns(days.values(), 2)
    args: list[Any] = [SEP.join([k[0] for k in keys]), SEP.join([k[1] for k in keys]), lo, hi]
    if gone:
        args += _clear_args(gone)
    sql = _NUMBERS.format(
        before=before[0](len(args) + 1) + ", " if before else "",
        wait=_WAIT_BEFORE if before else "", after=_CLEARED if gone else "",
        more=_CLEARED_ROWS if gone else "")
    if before:
        args += before[1]
    rows = sorted(await fetch(conn, sql, *args), key=_FIRST)
    known, made = rows[0], rows[1]
    out = {keys[i - 1]: n for i, n in zip(known[1] or (), known[2] or (), strict=True)}
    out.update(zip(zip(made[3] or (), made[4] or (), strict=True), made[2] or (), strict=True))
    missing = [k for k in keys if k not in out]
    if missing:
        out |= {(r[0], r[1]): r[2] for r in await fetch(conn, _KNOWN, *columns(missing, 2))}
    if not gone:
        return out, []
    c = rows[2]
    return out, _with_profiles(gone, [
        (ws, figure, dim, key, seg, day, chunk, n, twice) for chunk, n, ws, figure, dim, key,
        seg, day, twice in zip(*(c[i] or () for i in range(1, 10)), strict=True)])


async def add(conn: AsyncConnection, people: People, number: dict[tuple[str, str], int],
              also: tuple[str, list[Any]] = ("", [])) -> None:
    """OR the batch's people into their day bitmaps (one upsert). `number`: the profiles'
    numbers (number_and_clear), their days already inside their bounds. `also`: a CTE
    (`name AS (...)`, its parameters from $10) the upsert's statement runs too."""
    if not people:
        return
    rows: dict[tuple[str, str, str, str, str, date, int], tuple[list[int], list[int]]] = {}
    last: tuple[str, str] | None = None  # a person's keys come one after another (Rollup)
    chunk = bit = 0
    for (ws, figure, dim, key, seg, day, pid), n in people.items():
        if last is None or pid != last[1] or ws != last[0]:
            last = (ws, pid)
            chunk, bit = divmod(number[last], BITS)
        row = rows.get((ws, figure, dim, key, seg, day, chunk))
        if row is None:
            row = rows[(ws, figure, dim, key, seg, day, chunk)] = ([], [])
        row[0].append(bit)
        if n >= 2:
            row[1].append(bit)
    keys = sorted(rows)  # one order of row locks in every batch
    await fetch(conn, f"WITH {also[0]} {_ADD}" if also[0] else _ADD, *columns(keys, 7),
                [bitmap(rows[k][0]) for k in keys],
                [bitmap(rows[k][1]) if k[1] in TWICE else None for k in keys], *also[1])


async def clear(conn: AsyncConnection, gone: list[tuple[str, str]]) -> list[Any]:
    """Take (workspace, profile)s out of every bitmap and forget their numbers; returns
    the rows they were in (workspace_id, figure, dim, key, segment, day, chunk, n, twice,
    profile id)."""
    return await _clear(conn, await _forget_numbers(conn, gone))


# Forget the numbers of `{gone}`'s (workspace, profile)s: (workspace, profile, n, first
# day, last day) each.
FORGET = (
    "DELETE FROM profile.kpi_numbers k USING ({gone}) AS g(ws, pid) WHERE k.workspace_id = "
    "g.ws AND k.profile_id = g.pid RETURNING k.workspace_id, k.profile_id, k.n, k.first_day, "
    "k.last_day")


async def _forget_numbers(conn: AsyncConnection, gone: list[tuple[str, str]]) -> list[Any]:
    """Delete the profiles' numbers: (workspace, profile, n, first day, last day) each."""
    if not gone:
        return []
    return await fetch(conn, FORGET.format(
        gone="SELECT * FROM unnest($1::text[], $2::text[])"), *columns(gone, 2))


async def _clear(conn: AsyncConnection, found: list[Any]) -> list[Any]:
    if not found:
        return []
    return _with_profiles(found, await fetch(conn, _CLEAR, *_clear_args(found)))
