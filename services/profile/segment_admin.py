"""Define, re-evaluate and drop segments over a whole workspace. Never commits."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.profile import repository as repo
from services.profile import segment_store
from services.profile.domain.conventions import Conventions
from services.profile.domain.segments import Rule
from services.profile.domain.snapshot import snapshot
from services.profile.domain.state import Change, ProfileState, iso
from services.profile.tables import outbox, profiles, segment_members
from shared.contracts.envelope import message_key
from shared.contracts.profile import ProfileChange
from shared.db import OutboxRow, add_to_outbox
from shared.settings import Settings

CHUNK = 1000


async def reevaluate(conn: AsyncConnection, settings: Settings, workspace_id: str,
                     rules: dict[str, Rule], now: datetime, *, after: str = "",
                     limit: int = CHUNK) -> tuple[list[OutboxRow], str | None]:
    """Evaluate `rules` for one page of the workspace's profiles (id order, after `after`).

    Returns the outbox ids and the last profile id of the page (None when done).
    """
    rows = (await conn.execute(select(profiles).where(
        profiles.c.workspace_id == workspace_id, profiles.c.id > after)
        .order_by(profiles.c.id).limit(limit))).mappings().all()
    if not rows:
        return [], None
    states = {r["id"]: repo.state_from_row(r) for r in rows}
    conv = (await repo.conventions_for(conn, [workspace_id]))[workspace_id]
    current = await repo.memberships(conn, states)
    views = {pid: snapshot(p, [], now, conv).model_dump() for pid, p in states.items()}
    moves = await segment_store.evaluate(conn, workspace_id, rules, views, current, now)
    ids = await emit(conn, settings, workspace_id, moves.changes, now, {
        pid: sorted(moves.members[pid]) for pid in states}, states, conv)
    return ids, (rows[-1]["id"] if len(rows) == limit else None)


async def emit(conn: AsyncConnection, settings: Settings, workspace_id: str,
               changes: list[tuple[str, Change]], now: datetime,
               members: dict[str, list[str]], states: dict[str, ProfileState],
               conv: Conventions) -> list[OutboxRow]:
    messages = [(message_key(workspace_id, pid), ProfileChange(
        id=f"{change.kind}:{pid}:{change.data.get('segment', '')}:{iso(now)}",
        workspace_id=workspace_id, profile_id=pid, kind=change.kind, data=change.data,
        occurred_at=now, profile=snapshot(states[pid], members.get(pid, []), now, conv)))
        for pid, change in changes]
    return await add_to_outbox(conn, outbox, settings.topic("profile-changes"),
                               "profile-changes", messages)


async def drop(conn: AsyncConnection, settings: Settings, workspace_id: str, key: str,
               now: datetime) -> list[OutboxRow]:
    """Remove every member (each one exits) before the segment itself goes."""
    rows = (await conn.execute(delete(segment_members).where(
        segment_members.c.workspace_id == workspace_id, segment_members.c.segment_key == key)
        .returning(segment_members.c.profile_id))).all()
    messages = [(message_key(workspace_id, r.profile_id), ProfileChange(
        id=f"segment_exited:{r.profile_id}:{key}:{iso(now)}", workspace_id=workspace_id,
        profile_id=r.profile_id, kind="segment_exited", data={"segment": key},
        occurred_at=now)) for r in rows]
    return await add_to_outbox(conn, outbox, settings.topic("profile-changes"),
                               "profile-changes", messages)
