"""Writes the management API makes: consent decisions and erasure. Never commits."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.profile import kpis_store
from services.profile import repository as repo
from services.profile.domain.identity import identifier_hash
from services.profile.domain.snapshot import snapshot
from services.profile.domain.state import ProfileState, set_consent
from services.profile.tables import (
    events,
    identities,
    outbox,
    profiles,
    segment_members,
    tombstones,
)
from shared.contracts.envelope import message_key
from shared.contracts.profile import ChangeKind, ProfileChange
from shared.db import OutboxRow, add_to_outbox
from shared.settings import Settings


async def resolve_id(conn: AsyncConnection, workspace_id: str, profile_id: str) -> str | None:
    """The live profile for an id, following merges (a merged-away id resolves to the survivor)."""
    return (await conn.execute(select(identities.c.profile_id).where(
        identities.c.workspace_id == workspace_id, identities.c.kind == "profile_id",
        identities.c.value == profile_id))).scalar_one_or_none()


async def record_consent(conn: AsyncConnection, settings: Settings, p: ProfileState, key: str,
                         subscribed: bool, source: str, at: datetime) -> list[OutboxRow]:
    """Apply one decision to a locked profile; emits consent_changed when it changes anything."""
    changes = set_consent(p, key, subscribed, source, at)
    await repo.save_profiles(conn, [p])
    if not changes:
        return []
    conv = (await repo.conventions_for(conn, [p.workspace_id]))[p.workspace_id]
    members = (await repo.memberships(conn, [p.id]))[p.id]
    snap = snapshot(p, sorted(members), at, conv)
    message = ProfileChange(id=f"consent:{p.id}:{key}:{at.isoformat()}",
                            workspace_id=p.workspace_id, profile_id=p.id,
                            kind=ChangeKind.consent_changed, data=changes[0].data,
                            occurred_at=at, profile=snap)
    return await add_to_outbox(conn, outbox, settings.topic("profile-changes"), "profile-changes",
                               [(message_key(p.workspace_id, p.id), message)])


async def erase(conn: AsyncConnection, settings: Settings, workspace_id: str, profile_id: str,
                at: datetime) -> list[OutboxRow]:
    """GDPR erasure: delete the person and their history, keep hashed identifiers only.

    The tombstones stop late events and re-imports from re-creating them; the `erased`
    change tells journey and messaging to drop their copies.
    """
    await repo.lock_profiles(conn, [profile_id])
    idents = (await conn.execute(select(identities.c.kind, identities.c.value).where(
        identities.c.workspace_id == workspace_id,
        identities.c.profile_id == profile_id))).all()
    hashes = [{"workspace_id": workspace_id,
               "identifier_hash": identifier_hash(workspace_id, (r.kind, r.value))}
              for r in idents]
    if hashes:
        await conn.execute(insert(tombstones).values(hashes).on_conflict_do_nothing())
    await conn.execute(delete(identities).where(identities.c.workspace_id == workspace_id,
                                                identities.c.profile_id == profile_id))
    await conn.execute(delete(events).where(events.c.workspace_id == workspace_id,
                                            events.c.profile_id == profile_id))
    await conn.execute(delete(segment_members).where(
        segment_members.c.workspace_id == workspace_id,
        segment_members.c.profile_id == profile_id))
    await conn.execute(delete(profiles).where(profiles.c.id == profile_id))
    merged = sorted(r.value for r in idents if r.kind == "profile_id" and r.value != profile_id)
    for person in (profile_id, *merged):  # KPI rows written before a merge keep the old id
        await kpis_store.forget(conn, workspace_id, person)
    message = ProfileChange(id=f"erased:{profile_id}", workspace_id=workspace_id,
                            profile_id=profile_id, kind=ChangeKind.erased, occurred_at=at,
                            data={"merged_ids": merged})
    return await add_to_outbox(conn, outbox, settings.topic("profile-changes"), "profile-changes",
                               [(message_key(workspace_id, profile_id), message)])
