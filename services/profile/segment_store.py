"""Segment definitions and live membership: evaluate, store enter/exit. Never commits."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import String, and_, any_, bindparam, delete, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.profile.domain.segments import Aggregate, Rule, aggregates, matches, rule_adapter
from services.profile.domain.state import Change
from services.profile.repository import fetch
from services.profile.tables import events, segment_members, segments
from shared.conditions import STORED
from shared.contracts.storable import EARLIEST_EVENT_TIME


@dataclass(frozen=True)
class Moves:
    """Who entered and left which segment in one evaluation."""

    changes: list[tuple[str, Change]]  # (profile id, segment_entered/segment_exited)
    members: dict[str, set[str]]  # profile id -> segment keys after the evaluation


async def rules_for(conn: AsyncConnection, workspace_ids: Iterable[str]
                    ) -> dict[str, dict[str, Rule]]:
    wanted = set(workspace_ids)
    out: dict[str, dict[str, Rule]] = {ws: {} for ws in wanted}
    if wanted:
        for r in await fetch(conn, "SELECT workspace_id, key, rule FROM profile.segments "
                             "WHERE workspace_id = ANY($1::text[])", list(wanted)):
            out[r[0]][r[1]] = rule_adapter.validate_python(r[2], context=STORED)
    return out


async def unfinished(conn: AsyncConnection, workspace_id: str) -> dict[str, datetime]:
    """Segments whose membership was never computed over the whole workspace: key -> version
    (updated_at), so finishing one does not mark a rule that changed meanwhile."""
    rows = (await conn.execute(select(segments.c.key, segments.c.updated_at).where(
        segments.c.workspace_id == workspace_id, segments.c.computed_at.is_(None)))).all()
    return {r.key: r.updated_at for r in rows}


async def mark_computed(conn: AsyncConnection, workspace_id: str,
                        versions: dict[str, datetime]) -> None:
    for key, version in versions.items():
        await conn.execute(update(segments).where(
            segments.c.workspace_id == workspace_id, segments.c.key == key,
            segments.c.updated_at == version).values(computed_at=func.now()))


async def count_events(conn: AsyncConnection, workspace_id: str, profile_ids: list[str],
                       aggs: list[Aggregate], now: datetime) -> dict[str, dict[str, int]]:
    """profile id -> aggregate key -> how many matching events its history holds."""
    unique = list({a.key(): a for a in aggs}.values())
    if not unique or not profile_ids:
        return {}
    columns = []
    for i, agg in enumerate(unique):
        cond = [events.c.name == agg.event]
        if agg.within is not None:
            # min(): a rule stored before durations were bounded must not overflow.
            since = now - min(agg.within, now - EARLIEST_EVENT_TIME)
            cond.append(events.c.timestamp >= since)
        if agg.properties:
            cond.append(events.c.properties.contains(agg.properties))
        columns.append(func.count().filter(and_(*cond)).label(f"c{i}"))
    rows = (await conn.execute(
        select(events.c.profile_id, *columns)
        .where(events.c.workspace_id == workspace_id,
               events.c.profile_id == any_(bindparam(None, profile_ids, type_=ARRAY(String()))),
               events.c.name.in_({a.event for a in unique}))
        .group_by(events.c.profile_id))).all()
    return {r.profile_id: {a.key(): r[i + 1] for i, a in enumerate(unique)} for r in rows}


async def evaluate(conn: AsyncConnection, workspace_id: str, rules: dict[str, Rule],
                   views: dict[str, dict[str, Any]], current: dict[str, set[str]],
                   now: datetime, *, only: set[str] | None = None) -> Moves:
    """Evaluate `rules` (all, or the keys in `only`) for the profiles in `views`
    (profile id -> {"traits", "metrics", ...}); write and return who moved."""
    chosen = {k: r for k, r in rules.items() if only is None or k in only}
    pids = list(views)
    aggs = [a for r in chosen.values() for a in aggregates(r)]
    counts = await count_events(conn, workspace_id, pids, aggs, now)
    entered: list[dict[str, str]] = []
    exited: list[tuple[str, str, str]] = []
    changes: list[tuple[str, Change]] = []
    members = {pid: set(current.get(pid, set())) for pid in pids}
    for pid in pids:
        for key, rule in chosen.items():
            inside = matches(rule, views[pid], counts.get(pid, {}), now)
            if inside and key not in members[pid]:
                members[pid].add(key)
                entered.append({"workspace_id": workspace_id, "segment_key": key,
                                "profile_id": pid})
                changes.append((pid, Change("segment_entered", {"segment": key})))
            elif not inside and key in members[pid]:
                members[pid].discard(key)
                exited.append((workspace_id, key, pid))
                changes.append((pid, Change("segment_exited", {"segment": key})))
    if entered:
        await conn.execute(insert(segment_members).on_conflict_do_nothing(), entered)
    if exited:
        m = segment_members
        await conn.execute(delete(m).where(tuple_(m.c.workspace_id, m.c.segment_key,
                                                  m.c.profile_id).in_(exited)))
    return Moves(changes, members)
