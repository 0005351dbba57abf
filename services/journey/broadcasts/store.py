"""Broadcasts and their frozen audiences in Postgres (who is in the audience: audience.py).
Repositories never commit: callers own the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.journey.domain.policy import PastSend
from services.journey.tables import broadcast_audience, broadcasts, sends, snapshots
from shared.db.driver import driver

_SNAPSHOTS = f"{snapshots.schema}.{snapshots.name}"
_AUDIENCE = f"{broadcast_audience.schema}.{broadcast_audience.name}"


async def snapshots_of(conn: AsyncConnection, workspace_id: str, profile_ids: Sequence[str]
                       ) -> dict[str, tuple[dict[str, Any], bool]]:
    rows = await (await driver(conn)).fetch(
        f"SELECT profile_id, snapshot, control FROM {_SNAPSHOTS} "
        "WHERE workspace_id = $1 AND profile_id = ANY($2::varchar[])",
        workspace_id, list(profile_ids))
    return {pid: (snap, ctl) for pid, snap, ctl in rows}


async def past_sends(conn: AsyncConnection, workspace_id: str, since: datetime,
                     profile_ids: Sequence[str] | None = None) -> dict[str, list[PastSend]]:
    """The workspace's sends since `since` per profile (all profiles, or these)."""
    sql = (f"SELECT profile_id, channel, topic, category, sent_at FROM "
           f"{sends.schema}.{sends.name} WHERE workspace_id = $1 AND sent_at > $2")
    args: list[Any] = [workspace_id, since]
    if profile_ids is not None:
        sql += " AND profile_id = ANY($3::varchar[])"
        args.append(list(profile_ids))
    out: dict[str, list[PastSend]] = {}
    for pid, channel, topic, category, at in await (await driver(conn)).fetch(sql, *args):
        out.setdefault(pid, []).append(PastSend(channel, topic, category, at))
    return out


async def freeze(conn: AsyncConnection, workspace_id: str, key: str,
                 due: Sequence[tuple[str, datetime]]) -> None:
    """The audience at send start, one pending row per recipient with its due time.
    Recipients already there (a resumed broadcast) keep their row and status."""
    if due:
        await (await driver(conn)).execute(
            f"INSERT INTO {_AUDIENCE} (workspace_id, broadcast_key, profile_id, status, due_at) "
            "SELECT $1, $2, pid, 'pending', at FROM unnest($3::varchar[], $4::timestamptz[]) "
            "AS u(pid, at) ON CONFLICT DO NOTHING",
            workspace_id, key, [pid for pid, _ in due], [at for _, at in due])


async def claim_due(conn: AsyncConnection, workspace_id: str, key: str, now: datetime,
                    limit: int) -> list[tuple[str, datetime | None]]:
    """Up to `limit` due recipients, locked (SKIP LOCKED: replicas share the work)."""
    rows = await (await driver(conn)).fetch(
        f"SELECT profile_id, held_since FROM {_AUDIENCE} WHERE workspace_id = $1 "
        "AND broadcast_key = $2 AND status = 'pending' AND due_at <= $3 "
        "ORDER BY due_at, profile_id LIMIT $4 FOR UPDATE SKIP LOCKED",
        workspace_id, key, now, limit)
    return [(pid, held) for pid, held in rows]


async def settle(conn: AsyncConnection, workspace_id: str, key: str,
                 rows: Sequence[tuple[str, str, datetime, datetime | None, str | None]]) -> None:
    """(profile, status, due_at, held_since, reason) per recipient handled."""
    if rows:
        await (await driver(conn)).execute(
            f"UPDATE {_AUDIENCE} AS a SET status = u.st, due_at = u.due, held_since = u.held, "
            "reason = u.why, updated_at = clock_timestamp() FROM unnest($3::varchar[], "
            "$4::varchar[], $5::timestamptz[], $6::timestamptz[], $7::varchar[]) "
            "AS u(pid, st, due, held, why) WHERE a.workspace_id = $1 AND a.broadcast_key = $2 "
            "AND a.profile_id = u.pid",
            workspace_id, key, *[list(col) for col in zip(*rows, strict=True)])


async def pending_left(conn: AsyncConnection, workspace_id: str, key: str) -> bool:
    row = await (await driver(conn)).fetchrow(
        f"SELECT 1 FROM {_AUDIENCE} WHERE workspace_id = $1 AND broadcast_key = $2 "
        "AND status = 'pending' LIMIT 1", workspace_id, key)
    return row is not None


async def counts(conn: AsyncConnection, workspace_id: str, key: str) -> dict[str, Any]:
    a = broadcast_audience.c
    rows = (await conn.execute(
        select(a.status, a.held_since.is_not(None).label("held"), a.reason, func.count())
        .where(a.workspace_id == workspace_id, a.broadcast_key == key)
        .group_by(a.status, "held", a.reason))).all()
    out: dict[str, Any] = {"audience": 0, "pending": 0, "sent": 0, "suppressed": 0,
                           "deferred": 0, "held": 0, "expired": 0, "reasons": {}}
    for status, held, reason, n in rows:
        out["audience"] += n
        out[status] = out.get(status, 0) + n
        if status == "pending" and held:
            out["deferred"] += n
        if status in ("suppressed", "held", "expired") and reason:
            out["reasons"][reason] = out["reasons"].get(reason, 0) + n
    return out


async def load(conn: AsyncConnection, workspace_id: str, key: str, *, lock: bool = False
               ) -> Any:
    stmt = select(broadcasts).where(broadcasts.c.workspace_id == workspace_id,
                                    broadcasts.c.key == key)
    return (await conn.execute(stmt.with_for_update() if lock else stmt)).mappings().first()


async def set_status(conn: AsyncConnection, workspace_id: str, key: str, **values: Any) -> Any:
    return (await conn.execute(update(broadcasts).where(
        broadcasts.c.workspace_id == workspace_id, broadcasts.c.key == key)
        .values(**values, updated_at=func.clock_timestamp()).returning(broadcasts))
    ).mappings().one()
