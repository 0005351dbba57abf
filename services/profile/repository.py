"""Profile rows in and out of Postgres, a whole batch at a time. Never commits."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

import orjson
from sqlalchemy import String, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from services.profile.domain.conventions import Conventions
from services.profile.domain.state import ProfileState
from shared.contracts.storable import finite_time
from shared.db.driver import driver
from shared.kafka.errors import DependencyUnavailable

# Columns that mirror ProfileState fields one to one.
_FIELDS = ("id", "workspace_id", "user_id", "email", "phone", "timezone", "traits", "trait_seen",
           "event_count", "first_seen_at", "last_seen_at", "order_count", "gross_revenue",
           "refund_count", "refunded", "first_order_at", "last_order_at", "reactivated_at",
           "last_open_at", "last_click_at", "nps_score", "nps_at", "consent", "addresses",
           "push_tokens", "lifecycle_stage", "rfm", "predictions", "codes")


class IdentityRace(DependencyUnavailable):
    """Another writer claimed an identifier or merged a profile meanwhile: retry the batch."""


_TIMES = ("first_seen_at", "last_seen_at", "first_order_at", "last_order_at", "reactivated_at",
          "last_open_at", "last_click_at", "nps_at")


def state_from_row(row: Any) -> ProfileState:
    state = ProfileState(**{f: row[f] for f in _FIELDS})
    if any(row[f] is not None and row[f].tzinfo is None for f in _TIMES):
        # +-infinity stored before ingest corrected absurd timestamps: never a crash.
        now = datetime.now(UTC)
        for f in _TIMES:
            setattr(state, f, finite_time(getattr(state, f), now))
    return state


async def conventions_for(conn: AsyncConnection, workspace_ids: Iterable[str]
                          ) -> dict[str, Conventions]:
    wanted = set(workspace_ids)
    rows = await fetch(conn, "SELECT workspace_id, conventions FROM profile.workspace_settings "
                       "WHERE workspace_id = ANY($1::text[])", list(wanted))
    found = {r[0]: Conventions.model_validate(r[1]) for r in rows}
    return {ws: found.get(ws) or Conventions() for ws in wanted}


async def owners(conn: AsyncConnection, keys: dict[tuple[str, str, str], str]
                 ) -> tuple[dict[tuple[str, str, str], str], set[tuple[str, str, str]],
                            dict[str, ProfileState]]:
    """For (workspace, kind, value) -> the identifier's tombstone hash: the profile id of
    each known identifier, the identifiers nobody owns that belong to erased people
    (erasure deletes the identities, so only an unowned identifier can be an erased one),
    and the known identifiers' profiles, loaded and locked (`FOR UPDATE`, in id order, so
    two writers never deadlock). One statement: owners, tombstones and the lock were a
    round trip each. A profile merged or erased by another writer meanwhile is missing from
    the locked ones: IdentityRace, and the caller retries the batch."""
    if not keys:
        return {}, set(), {}
    ws, kinds, values, hashes = columns(((*k, h) for k, h in keys.items()), 4)
    rows = await fetch(conn, _OWNERS, ws, kinds, values, hashes)
    known = {(r[0], r[1], r[2]): r[3] for r in rows if r[3] is not None}
    states = {r["id"]: state_from_row(r) for r in rows if r[0] is None}
    if states.keys() != set(known.values()):
        raise IdentityRace("a profile was merged or erased by another writer")
    return known, {(r[0], r[1], r[2]) for r in rows if r[4]}, states


# unnest() of the arrays: one statement whatever the batch size. LATERAL probes, not plain
# joins: the planner would hash-join by scanning the whole table, while this is one
# primary-key probe per identifier (and a tombstone probe per unowned one), whatever the
# tables' size; LIMIT 1 keeps the planner from flattening a probe into a scan. The owners'
# ids are sorted (bytewise, as Python sorts them in lock_profiles) before the locks.
_OWNERS = (
    "WITH q AS MATERIALIZED (SELECT q.ws AS q_ws, q.k AS q_k, q.v AS q_v, "
    "i.profile_id AS q_pid, i.profile_id IS NULL AND EXISTS (SELECT 1 FROM "
    "profile.tombstones t WHERE t.workspace_id = q.ws AND t.identifier_hash = q.h) AS q_gone "
    "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS q(ws, k, v, h) "
    "LEFT JOIN LATERAL (SELECT i.profile_id FROM profile.identities i WHERE "
    "i.workspace_id = q.ws AND i.kind = q.k AND i.value = q.v LIMIT 1) AS i ON true), "
    "l AS MATERIALIZED (SELECT p.* FROM (SELECT q_pid AS id FROM q WHERE q_pid IS NOT NULL "
    "GROUP BY q_pid ORDER BY q_pid COLLATE \"C\") AS u CROSS JOIN LATERAL (SELECT * FROM "
    "profile.profiles WHERE id = u.id LIMIT 1 FOR UPDATE) AS p) "
    # The owners' rows, then each locked profile once (`ON false`: q's rows with l's columns
    # null, typed).
    "SELECT q.*, l.* FROM q LEFT JOIN l ON false "
    "UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, l.* FROM l")


async def lock_profiles(conn: AsyncConnection, ids: Iterable[str]) -> dict[str, ProfileState]:
    """Load and lock (in id order, so two writers never deadlock) the profiles given."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = await fetch(
        # LIMIT 1 keeps the planner from flattening the probe into a scan of the table; the
        # ids come sorted, so locks are taken in id order.
        conn, "SELECT p.* FROM unnest($1::text[]) WITH ORDINALITY AS u(id, n) "
        "CROSS JOIN LATERAL (SELECT * FROM profile.profiles WHERE id = u.id LIMIT 1 "
        "FOR UPDATE) AS p ORDER BY u.n", wanted)
    if len(rows) != len(wanted):
        raise IdentityRace("a profile was merged or erased by another writer")
    return {r["id"]: state_from_row(r) for r in rows}


async def repoint(conn: AsyncConnection, merges: dict[str, str]) -> None:
    """Move identifiers, history and memberships of merged profiles (loser -> survivor)."""
    if not merges:
        return
    # One statement (data-modifying CTEs on four tables), so one round trip per batch.
    await fetch(conn, _REPOINT, list(merges), orjson.dumps(merges).decode())


# A loser's rows of `table`, found by an index probe per loser: the LATERAL subquery
# (OFFSET 0: never flattened into a join) keeps the index whatever the statistics, where
# `profile_id = ANY($1)` in the connection's cached generic plan went to a scan of the
# whole table once the plan was made on a small one (every batch with a merge paid a scan
# of the history until autovacuum analysed it). The rows are then reached by ctid; nothing
# else writes them meanwhile (their profiles are locked, as for every identity and history
# row).
def _losers_rows(table: str) -> str:
    return (f"(SELECT f.ctid AS t FROM unnest($1::text[]) AS l(id) CROSS JOIN LATERAL (SELECT "
            f"ctid FROM profile.{table} WHERE profile_id = l.id OFFSET 0) AS f) AS f")


_REPOINT = (
    "WITH i AS (UPDATE profile.identities x SET profile_id = $2::jsonb ->> x.profile_id "
    f"FROM {_losers_rows('identities')} WHERE x.ctid = f.t), "
    "e AS (UPDATE profile.events x SET profile_id = $2::jsonb ->> x.profile_id "
    f"FROM {_losers_rows('events')} WHERE x.ctid = f.t), "
    "s AS (DELETE FROM profile.segment_members WHERE profile_id = ANY($1::text[])) "
    "DELETE FROM profile.profiles WHERE id = ANY($1::text[])")

_PROFILE_TYPES = {
    "id": "text", "workspace_id": "text", "user_id": "text", "email": "text", "phone": "text",
    "timezone": "text", "traits": "jsonb", "trait_seen": "jsonb", "event_count": "int8",
    "first_seen_at": "timestamptz", "last_seen_at": "timestamptz", "order_count": "int4",
    "gross_revenue": "float8", "refund_count": "int4", "refunded": "float8",
    "first_order_at": "timestamptz", "last_order_at": "timestamptz",
    "reactivated_at": "timestamptz", "last_open_at": "timestamptz",
    "last_click_at": "timestamptz", "nps_score": "int2", "nps_at": "timestamptz",
    "consent": "jsonb", "addresses": "jsonb", "push_tokens": "jsonb",
    "lifecycle_stage": "text", "rfm": "jsonb", "rfm_segment": "text", "predictions": "jsonb",
    "codes": "jsonb",
}


def _column(name: str) -> Callable[[ProfileState], Any]:
    """How one upsert parameter is read off a ProfileState (built once, used per row)."""
    if name == "rfm_segment":
        return lambda p: p.rfm.get("segment") if p.rfm else None
    if name == "phone":
        return lambda p: p.phone[:32] if p.phone else None
    if _PROFILE_TYPES[name] == "jsonb":
        get = attrgetter(name)
        return lambda p: orjson.dumps(get(p)).decode()
    return attrgetter(name)


_COLUMNS = [_column(c) for c in _PROFILE_TYPES]
_UPSERT = (
    f"INSERT INTO profile.profiles ({', '.join(_PROFILE_TYPES)}) VALUES ("
    + ", ".join(f"${i + 1}::{t}" for i, t in enumerate(_PROFILE_TYPES.values()))
    + ") ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _PROFILE_TYPES if c != "id")
    + ", updated_at = now()")


async def fetch(conn: AsyncConnection, sql: str, *args: Any) -> list[Any]:
    """asyncpg's own fetch inside the current transaction, for the per-batch statements:
    SQLAlchemy's parameter and result processing cost more than most of them. JSONB columns are
    decoded by the codec the engine installed on the connection (orjson)."""
    return await (await driver(conn)).fetch(sql, *args)  # type: ignore[no-any-return]


async def _executemany(conn: AsyncConnection, sql: str, args: list[tuple[Any, ...]]) -> None:
    """asyncpg's own executemany inside the current transaction: one prepared statement,
    rows streamed."""
    await (await driver(conn)).executemany(sql, args)


async def save_profiles(conn: AsyncConnection, states: Iterable[ProfileState]) -> None:
    args = [tuple([column(p) for column in _COLUMNS]) for p in states]
    if args:
        await _executemany(conn, _UPSERT, args)


async def write(conn: AsyncConnection, identities: list[dict[str, str]],
                states: list[ProfileState], history: list[dict[str, Any]],
                members_of: list[str]) -> dict[str, set[str]]:
    """A batch's new identities, its profiles (upserted) and its history, in one statement
    (data-modifying CTEs; they were a round trip each), which also answers the segment
    memberships of the profiles `members_of` (profile id -> segment keys) as they were before
    it. A new identifier another writer claimed meanwhile raises IdentityRace: the caller
    rolls back and retries the batch. The tables have no foreign keys between them, so the
    order inside does not matter."""
    out: dict[str, set[str]] = {pid: set() for pid in members_of}
    if not (identities or states or history or members_of):
        return out
    rows = [[column(p) for column in _COLUMNS] for p in states]
    profiles = [list(c) for c in zip(*rows, strict=True)] if rows else [[]] * len(_COLUMNS)
    got = await fetch(
        conn, _WRITE, *columns(((r["workspace_id"], r["kind"], r["value"], r["profile_id"])
                                 for r in identities), 4), *profiles,
        *columns(((r["workspace_id"], r["event_id"], r["profile_id"], r["type"], r["name"],
                    orjson.dumps(r["properties"]).decode(), r["timestamp"], r["received_at"])
                   for r in history), 8), members_of)
    for pid, key, claimed in got:
        if pid is None:
            if claimed != len(identities):
                raise IdentityRace("an identifier was claimed by another writer")
        else:
            out[pid].add(key)
    return out


def _unnest(types: list[str], first: int) -> str:
    """unnest() of one array parameter per column, numbered from $first; JSONB goes as text
    (the engine's codec takes JSON text) and is cast where it is inserted."""
    return "unnest(" + ", ".join(
        f"${first + i}::{'text' if t == 'jsonb' else t}[]" for i, t in enumerate(types)) + ")"


def _casts(columns: dict[str, str]) -> str:
    return ", ".join(f"u.{c}::jsonb" if t == "jsonb" else f"u.{c}" for c, t in columns.items())


_HISTORY_TYPES = {"workspace_id": "text", "event_id": "text", "profile_id": "text",
                  "type": "text", "name": "text", "properties": "jsonb",
                  "timestamp": "timestamptz", "received_at": "timestamptz"}
_WRITE = (
    "WITH i AS (INSERT INTO profile.identities (workspace_id, kind, value, profile_id) "
    f"SELECT * FROM {_unnest(['text'] * 4, 1)} ON CONFLICT DO NOTHING RETURNING 1), "
    f"p AS (INSERT INTO profile.profiles ({', '.join(_PROFILE_TYPES)}) "
    f"SELECT {_casts(_PROFILE_TYPES)} FROM {_unnest(list(_PROFILE_TYPES.values()), 5)} "
    f"AS u({', '.join(_PROFILE_TYPES)}) ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _PROFILE_TYPES if c != "id")
    + ", updated_at = now()), "
    f"h AS (INSERT INTO profile.events ({', '.join(_HISTORY_TYPES)}) "
    f"SELECT {_casts(_HISTORY_TYPES)} FROM "
    f"{_unnest(list(_HISTORY_TYPES.values()), 5 + len(_PROFILE_TYPES))} "
    f"AS u({', '.join(_HISTORY_TYPES)}) ON CONFLICT DO NOTHING) "
    "SELECT NULL::text, NULL::text, (SELECT count(*) FROM i) UNION ALL "
    "SELECT profile_id, segment_key, NULL FROM profile.segment_members "
    f"WHERE profile_id = ANY(${5 + len(_PROFILE_TYPES) + len(_HISTORY_TYPES)}::text[])")


async def memberships(conn: AsyncConnection, ids: Iterable[str]) -> dict[str, set[str]]:
    wanted = list(set(ids))
    out: dict[str, set[str]] = {pid: set() for pid in wanted}
    if wanted:
        for r in await fetch(conn, "SELECT profile_id, segment_key FROM profile.segment_members "
                             "WHERE profile_id = ANY($1::text[])", wanted):
            out[r[0]].add(r[1])
    return out


def _texts(values: list[str]) -> Any:
    """One array parameter: the statement text (and its prepared plan) is the same for any
    number of ids, where an IN list is a new statement per length."""
    return bindparam(None, values, type_=ARRAY(String()))


SEP = chr(31)  # the unit separator: joins a text column into one parameter (unnest_args)


def unnest_args(first: int, cols: list[list[Any]], types: list[str]) -> tuple[str, list[Any]]:
    """unnest()'s arguments for `cols` (SQL types `types`) as parameters $first...: a text
    column as one joined text split in SQL (string_to_array) when no value holds SEP, else
    the array. asyncpg checks and encodes a text array's elements one at a time in Python
    (two ABC isinstance checks each), ~0.3 us per value: hundreds per statement."""
    exprs: list[str] = []
    args: list[Any] = []
    for i, (col, kind) in enumerate(zip(cols, types, strict=True)):
        n = first + i
        try:
            joined = SEP.join(col) if kind == "text" else ""
        except TypeError:  # a NULL among them
            joined = ""
        if joined and joined.count(SEP) == len(col) - 1:
            exprs.append(f"string_to_array(${n}, chr(31))")
            args.append(joined)
        else:  # other types; an empty column, a NULL, or values holding SEP
            exprs.append(f"${n}::{kind}[]")
            args.append(col)
    return ", ".join(exprs), args


def columns(rows: Iterable[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows -> one list per column of their first `width` values (what unnest() takes).
    zip() transposes in C: ~4x faster than appending value by value (~0.15 us per value)."""
    out = [list(col) for col in zip(*rows, strict=True)]
    if len(out) < width:
        if out:
            raise IndexError(f"a row has fewer than {width} values")
        return [[] for _ in range(width)]
    return out[:width]
