"""Profile rows in and out of Postgres, a whole batch at a time. Never commits."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.profile.domain.conventions import Conventions
from services.profile.domain.state import ProfileState
from services.profile.tables import (
    events,
    identities,
    profiles,
    segment_members,
    tombstones,
    workspace_settings,
)
from shared.kafka.errors import DependencyUnavailable

# Columns that mirror ProfileState fields one to one.
_FIELDS = ("id", "workspace_id", "user_id", "email", "phone", "timezone", "traits", "trait_seen",
           "event_count", "first_seen_at", "last_seen_at", "order_count", "gross_revenue",
           "refund_count", "refunded", "first_order_at", "last_order_at", "reactivated_at",
           "last_open_at", "last_click_at", "nps_score", "nps_at", "consent", "addresses",
           "push_tokens", "lifecycle_stage", "rfm", "predictions")
_CHUNK = 500


class IdentityRace(DependencyUnavailable):
    """Another writer claimed an identifier or merged a profile meanwhile: retry the batch."""


def state_from_row(row: Any) -> ProfileState:
    return ProfileState(**{f: row[f] for f in _FIELDS})


def row_from_state(p: ProfileState) -> dict[str, Any]:
    row = {f: getattr(p, f) for f in _FIELDS}
    row["rfm_segment"] = p.rfm.get("segment") if p.rfm else None
    row["phone"] = p.phone[:32] if p.phone else None
    return row


async def conventions_for(conn: AsyncConnection, workspace_ids: Iterable[str]
                          ) -> dict[str, Conventions]:
    wanted = set(workspace_ids)
    rows = (await conn.execute(select(workspace_settings.c.workspace_id,
                                      workspace_settings.c.conventions)
                               .where(workspace_settings.c.workspace_id.in_(wanted)))).all()
    found = {r.workspace_id: Conventions.model_validate(r.conventions) for r in rows}
    return {ws: found.get(ws) or Conventions() for ws in wanted}


async def erased(conn: AsyncConnection, hashes: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which (workspace, identifier hash) pairs belong to erased people."""
    if not hashes:
        return set()
    t = tombstones
    rows = (await conn.execute(select(t.c.workspace_id, t.c.identifier_hash).where(
        tuple_(t.c.workspace_id, t.c.identifier_hash).in_(list(set(hashes)))))).all()
    return {(r.workspace_id, r.identifier_hash) for r in rows}


async def owners(conn: AsyncConnection, keys: list[tuple[str, str, str]]
                 ) -> dict[tuple[str, str, str], str]:
    """(workspace, kind, value) -> profile id, for the identifiers that are known."""
    if not keys:
        return {}
    t = identities
    rows = (await conn.execute(select(t.c.workspace_id, t.c.kind, t.c.value, t.c.profile_id).where(
        tuple_(t.c.workspace_id, t.c.kind, t.c.value).in_(list(set(keys)))))).all()
    return {(r.workspace_id, r.kind, r.value): r.profile_id for r in rows}


async def lock_profiles(conn: AsyncConnection, ids: Iterable[str]) -> dict[str, ProfileState]:
    """Load and lock (in id order, so two writers never deadlock) the profiles given."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = (await conn.execute(select(profiles).where(profiles.c.id.in_(wanted))
                               .order_by(profiles.c.id).with_for_update())).mappings().all()
    if len(rows) != len(wanted):
        raise IdentityRace("a profile was merged or erased by another writer")
    return {r["id"]: state_from_row(r) for r in rows}


async def claim_identities(conn: AsyncConnection, rows: list[dict[str, str]]) -> None:
    """Point new identifiers at their profiles; a concurrent claim means we must retry."""
    for chunk in _chunks(rows):
        got = (await conn.execute(insert(identities).values(chunk).on_conflict_do_nothing()
                                  .returning(identities.c.value))).all()
        if len(got) != len(chunk):
            raise IdentityRace("an identifier was claimed by another writer")


async def repoint(conn: AsyncConnection, merges: list[tuple[str, str]]) -> None:
    """Move identifiers, history and memberships of merged profiles (loser -> survivor)."""
    for loser, survivor in merges:
        await conn.execute(update(identities).where(identities.c.profile_id == loser)
                           .values(profile_id=survivor))
        await conn.execute(update(events).where(events.c.profile_id == loser)
                           .values(profile_id=survivor))
        await conn.execute(delete(segment_members).where(segment_members.c.profile_id == loser))
    if merges:
        await conn.execute(delete(profiles).where(profiles.c.id.in_([m[0] for m in merges])))


async def save_profiles(conn: AsyncConnection, states: Iterable[ProfileState]) -> None:
    rows = [row_from_state(p) for p in states]
    for chunk in _chunks(rows):
        stmt = insert(profiles)
        set_ = {c: stmt.excluded[c] for c in chunk[0] if c != "id"}
        set_["updated_at"] = func.now()
        await conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=set_), chunk)


async def add_history(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    for chunk in _chunks(rows):
        await conn.execute(insert(events).on_conflict_do_nothing(), chunk)


async def memberships(conn: AsyncConnection, ids: Iterable[str]) -> dict[str, set[str]]:
    wanted = list(set(ids))
    out: dict[str, set[str]] = {pid: set() for pid in wanted}
    if wanted:
        rows = (await conn.execute(select(segment_members.c.profile_id,
                                          segment_members.c.segment_key)
                                   .where(segment_members.c.profile_id.in_(wanted)))).all()
        for r in rows:
            out[r.profile_id].add(r.segment_key)
    return out


def _chunks(rows: list[Any], size: int = _CHUNK) -> Iterable[list[Any]]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]
