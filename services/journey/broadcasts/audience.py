"""Who is in a broadcast's audience, as SQL over journey's profile snapshots: a segment
through the GIN index on `segments`, a condition tree compiled to SQL over the snapshot
(condition_sql.py; the few rows SQL cannot decide are decided in Python first). The
preview and the freeze at send start both select with it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from services.journey.broadcasts.condition_sql import Params, compile_condition
from services.journey.domain.broadcast import BroadcastDocument
from services.journey.domain.conditions import evaluate
from services.journey.tables import broadcast_audience, snapshots
from shared.db.driver import driver

SNAPSHOTS = f"{snapshots.schema}.{snapshots.name}"
_AUDIENCE = f"{broadcast_audience.schema}.{broadcast_audience.name}"
# A snapshot's zone as the audience queries group it ('' when it has none).
ZONE = "coalesce(s.snapshot ->> 'timezone', '')"


@dataclass(frozen=True)
class Audience:
    workspace_id: str
    doc: BroadcastDocument
    decided: tuple[str, ...] = ()  # members SQL could not decide and Python did

    def where(self, p: Params) -> str:
        """The audience as a predicate over `s` (the snapshots table)."""
        sql = f"s.workspace_id = {p(self.workspace_id, 'varchar')}"
        if self.doc.segment is not None:
            return f"{sql} AND s.segments @> ARRAY[{p(self.doc.segment, 'text')}]"
        assert self.doc.condition is not None
        bounds = compile_condition(self.doc.condition, p, "s.snapshot")
        if self.decided:
            return (f"{sql} AND ({bounds.tight} OR s.profile_id = "
                    f"ANY({p(list(self.decided), 'varchar[]')}))")
        return f"{sql} AND {bounds.tight}"


async def audience(conn: AsyncConnection, workspace_id: str, doc: BroadcastDocument,
                   now: datetime) -> Audience:
    """The audience now. A condition that SQL decides only in part: the rows in between
    (its loose bound but not its tight one) are read and decided by `evaluate`."""
    if doc.condition is None:
        return Audience(workspace_id, doc)
    p = Params()
    bounds = compile_condition(doc.condition, p, "s.snapshot")
    if bounds.exact:
        return Audience(workspace_id, doc)
    rows = await (await driver(conn)).fetch(
        f"SELECT s.profile_id, s.snapshot FROM {SNAPSHOTS} s WHERE s.workspace_id = "
        f"{p(workspace_id, 'varchar')} AND {bounds.loose} AND NOT {bounds.tight}", *p.args)
    return Audience(workspace_id, doc, tuple(
        pid for pid, snap in rows if evaluate(doc.condition, {"profile": snap}, now)))


async def zones(conn: AsyncConnection, aud: Audience) -> list[str]:
    """The distinct zones ('' for none) of the audience's snapshots."""
    p = Params()
    rows = await (await driver(conn)).fetch(
        f"SELECT DISTINCT {ZONE} FROM {SNAPSHOTS} s WHERE {aud.where(p)}", *p.args)
    return [zone for (zone,) in rows]


async def freeze(conn: AsyncConnection, aud: Audience, key: str, now: datetime,
                 due: Sequence[tuple[str, datetime]] = ()) -> int:
    """One pending row per member, due now or at its zone's moment in `due` ((zone,
    moment), from `zones`). Members already there (a resumed broadcast) keep their row
    and status. Returns how many rows were added."""
    p = Params()
    where, at, join = aud.where(p), p(now, "timestamptz"), ""
    if due:
        join = (f"LEFT JOIN unnest({p([z for z, _ in due], 'text[]')}, "
                f"{p([t for _, t in due], 'timestamptz[]')}) AS z(zone, at) ON z.zone = {ZONE}")
        at = f"coalesce(z.at, {at})"
    done = await (await driver(conn)).execute(
        f"INSERT INTO {_AUDIENCE} (workspace_id, broadcast_key, profile_id, status, due_at) "
        f"SELECT s.workspace_id, {p(key, 'varchar')}, s.profile_id, 'pending', {at} "
        f"FROM {SNAPSHOTS} s {join} WHERE {where} ON CONFLICT DO NOTHING", *p.args)
    return int(done.rsplit(" ", 1)[-1])
