"""Journey's state in Postgres: instances (with their timers), decisions, sends, snapshots.

Repositories never commit: callers own the transaction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import BigInteger, Boolean, DateTime, Integer, String, Table, select, tuple_
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from services.journey.domain.document import JourneyDocument
from services.journey.domain.state import Decision, Instance
from services.journey.tables import (
    decisions,
    instances,
    journey_versions,
    sends,
    snapshots,
)
from services.journey.tables import outbox as outbox_table
from shared.conditions import STORED
from shared.db.driver import driver
from shared.db.outbox import OutboxRow, Pending, columns, insert_sql

Pair = tuple[str, str]  # (workspace_id, profile_id)
_FIELDS = [c.name for c in instances.columns if c.name != "updated_at"]


class Documents:
    """Parsed journey versions. Published versions never change, so each is parsed once."""

    def __init__(self) -> None:
        self._parsed: dict[tuple[str, str, int], JourneyDocument] = {}

    def parse(self, workspace_id: str, version: int, document: dict[str, Any]
              ) -> JourneyDocument:
        key = (workspace_id, str(document["key"]), version)
        if key not in self._parsed:  # grows with published versions only: never evicted
            self._parsed[key] = JourneyDocument.model_validate(document, context=STORED)
        return self._parsed[key]

    async def of(self, conn: AsyncConnection, wanted: Iterable[tuple[str, str, int]]
                 ) -> None:
        """Make sure these (workspace, key, version) are parsed (for instances' versions)."""
        missing = [w for w in set(wanted) if w not in self._parsed]
        if not missing:
            return
        rows = (await conn.execute(
            select(journey_versions.c.workspace_id, journey_versions.c.version,
                   journey_versions.c.document)
            .where(tuple_(journey_versions.c.workspace_id, journey_versions.c.key,
                          journey_versions.c.version).in_(missing)))).all()
        for row in rows:
            self.parse(row.workspace_id, row.version, row.document)

    def get(self, workspace_id: str, key: str, version: int) -> JourneyDocument:
        return self._parsed[(workspace_id, key, version)]


_INSTANCES = f"{instances.schema}.{instances.name}"
# Read in the dataclass's field order, so a row becomes an Instance positionally: building
# a dict per row for keyword arguments cost as much as the rest of loading it.
_LOADED = [f.name for f in dataclasses.fields(Instance) if f.name not in ("new", "dirty")]
assert sorted(_LOADED) == sorted(_FIELDS), "Instance fields and instances columns differ"
_COLUMNS = ", ".join(_LOADED)
# The batch's reads go straight to the driver, like the timer claim below: through
# SQLAlchemy, processing parameters and result rows cost more CPU than the queries.
# `= ANY(array)` per column: one parameter however many values, and Postgres uses the
# index (a join against `unnest` would make it hash the whole table).
# A signal's batch loads instances without their context (None): the signal path never
# reads it, and decoding every open instance's entry event cost more than the query.
# Unchanged, an UPDATE leaves it as it is (see _UPDATE).
_NO_CONTEXT = ", ".join("NULL::jsonb AS context" if f == "context" else f for f in _LOADED)
_OPEN = (f"SELECT {_NO_CONTEXT} FROM {_INSTANCES} "
         "WHERE workspace_id = ANY($1::varchar[]) AND profile_id = ANY($2::varchar[]) "
         "AND (status = 'active' OR (goal_at IS NULL AND goal_until > $3)) "
         "ORDER BY id FOR UPDATE")
_LATEST = (f"SELECT DISTINCT ON (workspace_id, journey_key, profile_id, instance_key) "
           f"{_NO_CONTEXT} FROM {_INSTANCES} "
           "WHERE workspace_id = ANY($1::varchar[]) AND journey_key = ANY($2::varchar[]) "
           "AND profile_id = ANY($3::varchar[]) AND instance_key = ANY($4::varchar[]) "
           "ORDER BY workspace_id, journey_key, profile_id, instance_key, entered_at DESC")


def _instances(rows: Iterable[Any]) -> list[Instance]:
    return [Instance(*row) for row in rows]


async def open_instances(conn: AsyncConnection, pairs: Sequence[Pair], now: datetime
                         ) -> list[Instance]:
    """Active instances, and finished ones whose goal window is still open; locked."""
    if not pairs:
        return []
    rows = await (await driver(conn)).fetch(
        _OPEN, sorted({p[0] for p in pairs}), sorted({p[1] for p in pairs}), now)
    wanted = set(pairs)  # ANY per column may also match other pairs' cross products
    return _instances(r for r in rows if (r["workspace_id"], r["profile_id"]) in wanted)


# `lock_customers`'s locks as a part of the latest instances' read: the read refers to them,
# so they are taken first (in one order), and a read that finds nothing takes them too.
_LATEST_LOCKING = (
    "SELECT l.* FROM (SELECT count(pg_advisory_xact_lock(k)) AS n FROM (SELECT "
    "hashtextextended(p, 0) AS k FROM unnest($5::text[]) AS p ORDER BY 1) AS s) AS locks "
    "LEFT JOIN LATERAL (" + _LATEST.replace(" WHERE ", " WHERE locks.n >= 0 AND ", 1)
    + ") AS l ON true")


async def latest_instances(conn: AsyncConnection, keys: Sequence[tuple[str, str, str, str]],
                           lock: Sequence[Pair] = ()) -> list[Instance]:
    """The newest instance per (workspace, journey, profile, instance key): entry policy.
    With `lock` (and keys), `lock_customers(lock)` in the same statement: the caller's
    next statement sees every send committed under those locks."""
    if not keys:
        return []
    wanted = set(keys)
    args = [sorted({k[n] for k in wanted}) for n in range(4)]
    if lock:
        rows = await (await driver(conn)).fetch(_LATEST_LOCKING, *args, _lock_keys(lock))
    else:
        rows = await (await driver(conn)).fetch(_LATEST, *args)
    return _instances(r for r in rows if (r["workspace_id"], r["journey_key"],
                                          r["profile_id"], r["instance_key"]) in wanted)


# The claim, in the words of the `instances_timers` index (journey_0003), straight to the
# driver: through SQLAlchemy, turning result rows into instances cost more than the query.
_DUE = (f"SELECT {_COLUMNS} FROM {_INSTANCES} "
        "WHERE status = 'active' AND wake_at <= $1 ORDER BY wake_at LIMIT $2 "
        "FOR UPDATE SKIP LOCKED")


async def due_instances(conn: AsyncConnection, now: datetime, limit: int) -> list[Instance]:
    """Claim instances whose timer is due. SKIP LOCKED lets replicas share the work."""
    return _instances(await (await driver(conn)).fetch(_DUE, now, limit))


_NEXT_WAKE = (f"SELECT min(wake_at) FROM {_INSTANCES} "
              "WHERE status = 'active' AND wake_at IS NOT NULL")


async def next_wake(conn: AsyncConnection) -> datetime | None:
    """The earliest pending timer (the first entry of `instances_timers`)."""
    when: datetime | None = await (await driver(conn)).fetchval(_NEXT_WAKE)
    return when


async def load_snapshots(conn: AsyncConnection, pairs: Sequence[Pair],
                         control: dict[Pair, bool] | None = None) -> dict[Pair, dict[str, Any]]:
    """The latest snapshots; `control` (when given) receives each one's control group
    membership."""
    if not pairs:
        return {}
    rows = await (await driver(conn)).fetch(
        f"SELECT workspace_id, profile_id, snapshot, control "
        f"FROM {snapshots.schema}.{snapshots.name} "
        "WHERE workspace_id = ANY($1::varchar[]) AND profile_id = ANY($2::varchar[])",
        sorted({p[0] for p in pairs}), sorted({p[1] for p in pairs}))
    wanted = set(pairs)  # ANY per column may also match other pairs' cross products
    out = {}
    for ws, pid, snap, ctl in rows:
        if (ws, pid) in wanted:
            out[(ws, pid)] = snap
            if control is not None:
                control[(ws, pid)] = ctl
    return out


async def save_snapshots(conn: AsyncConnection, latest: dict[Pair, dict[str, Any]],
                         control: Callable[[str, str], bool] | None = None) -> dict[Pair, bool]:
    """Upsert the latest snapshots (with their segment keys); returns each profile's global
    control group membership, which `control(workspace, profile)` decides on first sight
    only: an existing row keeps its own."""
    if not latest:
        return {}
    ordered = sorted(latest.items())
    # One statement over arrays: a batch's upsert is one round trip and no per-row
    # parameter processing.
    rows = await (await driver(conn)).fetch(
        f"INSERT INTO {snapshots.schema}.{snapshots.name} "
        "(workspace_id, profile_id, snapshot, segments, control) "
        "SELECT ws, pid, snap, ARRAY(SELECT jsonb_array_elements_text("
        "coalesce(snap->'segments', '[]'::jsonb))), ctl "
        "FROM unnest($1::varchar[], $2::varchar[], $3::jsonb[], $4::bool[]) "
        "AS u(ws, pid, snap, ctl) "
        "ON CONFLICT (workspace_id, profile_id) DO UPDATE "
        "SET snapshot = EXCLUDED.snapshot, segments = EXCLUDED.segments, updated_at = now() "
        "RETURNING workspace_id, profile_id, control",
        [ws for (ws, _), _ in ordered], [pid for (_, pid), _ in ordered],
        [_json(snap) for _, snap in ordered],
        [bool(control and control(ws, pid)) for (ws, pid), _ in ordered])
    return {(ws, pid): ctl for ws, pid, ctl in rows}


async def _driver_execute(conn: AsyncConnection, sql: str, *args: Any) -> None:
    await (await driver(conn)).execute(sql, *args)


# (channel, when, topic, category) of one send
SendRow = tuple[str, datetime, str | None, str | None]


async def recent_sends(conn: AsyncConnection, pairs: Sequence[Pair], since: datetime
                       ) -> dict[Pair, list[SendRow]]:
    if not pairs:
        return {}
    rows = await (await driver(conn)).fetch(
        f"SELECT workspace_id, profile_id, channel, sent_at, topic, category "
        f"FROM {sends.schema}.{sends.name} "
        "WHERE workspace_id = ANY($1::varchar[]) AND profile_id = ANY($2::varchar[]) "
        "AND sent_at > $3", sorted({p[0] for p in pairs}), sorted({p[1] for p in pairs}), since)
    out: dict[Pair, list[SendRow]] = {}
    wanted = set(pairs)
    for ws, pid, channel, sent_at, topic, category in rows:
        if (ws, pid) in wanted:
            out.setdefault((ws, pid), []).append((channel, sent_at, topic, category))
    return out


async def lock_customers(conn: AsyncConnection, pairs: Sequence[Pair]) -> None:
    """Serialise sends to the same customers across transactions and replicas until
    commit (a transaction-scoped advisory lock per customer, taken in one order so two
    batches never deadlock): caps are counted after the lock, so none is passed."""
    if pairs:
        await _driver_execute(
            conn, "SELECT pg_advisory_xact_lock(k) FROM (SELECT hashtextextended(p, 0) AS k "
                  "FROM unnest($1::text[]) AS p ORDER BY 1) AS locks", _lock_keys(pairs))


def _lock_keys(pairs: Sequence[Pair]) -> list[str]:
    return sorted({f"{ws}\x1f{pid}" for ws, pid in pairs})


_MUTABLE = [f for f in _FIELDS if f not in ("id", "workspace_id", "journey_key", "version",
                                             "entry_id", "entered_at")]
# The hot path's UPDATE goes straight to the driver (asyncpg pipelines executemany); built
# through SQLAlchemy it spent more time processing parameters than Postgres spent updating.
# clock_timestamp, not now(): when the row moved, not when the batch began.
_UPDATE = (f"UPDATE {instances.schema}.{instances.name} SET "
           + ", ".join(f"context = coalesce(${n}::jsonb, context)" if f == "context"
                       else f"{f} = ${n}" for n, f in enumerate(_MUTABLE, start=2))
           + ", updated_at = clock_timestamp() WHERE id = $1")


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _rows(touched: Iterable[Instance]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(new rows in _FIELDS order, changed rows as _UPDATE takes them); marks them clean."""
    new, changed = [], []
    for inst in touched:
        if inst.new:
            new.append(tuple(_json(inst.context) if f == "context" else getattr(inst, f)
                             for f in _FIELDS))
        elif inst.dirty:
            changed.append((inst.id, *((None if inst.context is None else _json(inst.context))
                                       if f == "context" else getattr(inst, f)
                                       for f in _MUTABLE)))
        inst.new = inst.dirty = False
    return new, changed


async def save_instances(conn: AsyncConnection, touched: Iterable[Instance]) -> None:
    await write(conn, touched, [], [], [])


_DECISION_COLUMNS = ["workspace_id", "profile_id", "journey_key", "version", "instance_id",
                     "instance_key", "stage", "step", "kind", "outcome", "reason", "detail",
                     "at"]
_SEND_COLUMNS = ["workspace_id", "idempotency_key", "profile_id", "channel", "journey_key",
                 "sent_at", "topic", "category"]


def _decision_rows(made: Sequence[Decision]) -> list[tuple[Any, ...]]:
    rows = []
    for d in made:  # tuples in _DECISION_COLUMNS order: about three per event, so no dicts
        who = d.instance
        rows.append((who.workspace_id, who.profile_id, who.journey_key, who.version,
                     getattr(who, "id", None), who.instance_key, d.stage, d.step, d.kind,
                     d.outcome, (d.reason or None) and d.reason[:300], _json(d.detail), d.at))
    return rows


# Each column type of the inserted tables, as the element type of its array parameter.
_ARRAY_TYPES: list[tuple[type, str]] = [(String, "text"), (BigInteger, "bigint"),
                                        (Integer, "int"), (Boolean, "bool"),
                                        (DateTime, "timestamptz"), (JSONB, "jsonb")]


def _insert(table: Table, columns: list[str], first: int, tail: str = "") -> str:
    """INSERT of one array parameter per column ($first on), in the arrays' order. Strings
    go as text[]: a cast to varchar(n) would cut a value that is too long, the column's
    own (assignment) cast refuses it, as COPY did."""
    def kind(column: str) -> str:
        t = table.c[column].type
        return next(name for sa, name in _ARRAY_TYPES if isinstance(t, sa))
    names = ", ".join(f'"{c}"' for c in columns)
    arrays = ", ".join(f"${first + n}::{kind(c)}[]" for n, c in enumerate(columns))
    return (f"INSERT INTO {table.schema}.{table.name} ({names}) SELECT {names} "
            f"FROM unnest({arrays}) WITH ORDINALITY AS u({names}, n) ORDER BY n{tail}")


@lru_cache(maxsize=4)
def _write_sql(outbox: Table) -> str:
    """A batch's inserts in one statement: new instances, decisions (in order: the "why"
    trace reads them by id), sends, and the outbox rows (in order, their ids returned)."""
    at = 1
    parts = []
    for name, table, names, tail in (("i", instances, _FIELDS, ""),
                                     ("d", decisions, _DECISION_COLUMNS, ""),
                                     ("s", sends, _SEND_COLUMNS, " ON CONFLICT DO NOTHING")):
        parts.append(f"{name} AS ({_insert(table, names, at, tail)})")
        at += len(names)
    return f"WITH {', '.join(parts)} {insert_sql(outbox.fullname, at)}"


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


async def write(conn: AsyncConnection, touched: Iterable[Instance], made: Sequence[Decision],
                sent: Sequence[dict[str, Any]], queued: Sequence[Pending],
                outbox: Table = outbox_table) -> list[OutboxRow]:
    """Everything a batch changes, in two statements at most: the changed instances'
    UPDATE, then one INSERT of the new instances, `made` decisions, `sent` sends and the
    `queued` outbox rows (each with its full topic). Before, each was a statement of its
    own and the two COPYs two round trips each: at a poll of a few events, most of the
    transaction's round trips. Returns the outbox rows to publish after commit."""
    new, changed = _rows(touched)
    db = await driver(conn)
    # Updates first: an instance a re-entry (or an exit then a new entry) ended in this batch
    # must leave the one-active-instance index before its successor is inserted (within one
    # statement, the order of its parts is not defined).
    if changed:
        await db.executemany(_UPDATE, changed)
    if not (new or made or sent or queued):
        return []
    rows = columns(queued)
    got = await db.fetch(
        _write_sql(outbox), *_columns(new, len(_FIELDS)),
        *_columns(_decision_rows(made), len(_DECISION_COLUMNS)),
        *[[row.get(c) for row in sent] for c in _SEND_COLUMNS], *rows)
    return rows.written([r[0] for r in got])


async def record_sends(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        columns = ["workspace_id", "idempotency_key", "profile_id", "channel", "journey_key",
                   "sent_at", "topic", "category"]
        await _driver_execute(
            conn, f"INSERT INTO {sends.schema}.{sends.name} ({', '.join(columns)}) "
                  "SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], "
                  "$4::varchar[], $5::varchar[], $6::timestamptz[], $7::varchar[], "
                  "$8::varchar[]) ON CONFLICT DO NOTHING",
            *[[row.get(c) for row in rows] for c in columns])

