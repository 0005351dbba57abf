"""Messaging's copy of consent: changes recorded (late ones never overwrite newer ones) and
carried over when profiles merge."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import literal, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.messaging.tables import consents, profile_aliases


async def record_consent(conn: AsyncConnection, *, workspace_id: str, profile_id: str,
                         scope: str, subscribed: bool, source: str, at: datetime) -> None:
    """Upsert; an older change never overwrites a newer one (changes can arrive late). A
    profile already merged into another passes the change on to the survivor."""
    survivor = (await conn.execute(select(profile_aliases.c.merged_into).where(
        profile_aliases.c.workspace_id == workspace_id,
        profile_aliases.c.profile_id == profile_id))).scalar()
    rows = [{"workspace_id": workspace_id, "profile_id": p, "scope": scope[:120],
             "subscribed": subscribed, "source": source[:100], "changed_at": at}
            for p in filter(None, (profile_id, survivor))]
    stmt = insert(consents).values(rows)
    await conn.execute(stmt.on_conflict_do_update(
        index_elements=[consents.c.workspace_id, consents.c.profile_id, consents.c.scope],
        set_={"subscribed": stmt.excluded.subscribed, "source": stmt.excluded.source,
              "changed_at": stmt.excluded.changed_at},
        where=consents.c.changed_at <= stmt.excluded.changed_at))


async def merge_consents(conn: AsyncConnection, *, workspace_id: str, into: str,
                         merged: list[str]) -> None:
    """Unsubscribes recorded on merged profiles keep counting for the surviving one, also
    those that arrive later for a merged id (see `record_consent`)."""
    if not merged:
        return
    await conn.execute(insert(profile_aliases).values([
        {"workspace_id": workspace_id, "profile_id": m, "merged_into": into} for m in merged
    ]).on_conflict_do_update(index_elements=[profile_aliases.c.workspace_id,
                                             profile_aliases.c.profile_id],
                             set_={"merged_into": into}))
    await conn.execute(update(profile_aliases).where(  # a chain of merges ends at `into`
        profile_aliases.c.workspace_id == workspace_id,
        profile_aliases.c.merged_into.in_(merged)).values(merged_into=into))
    source = select(consents.c.workspace_id, literal(into, consents.c.profile_id.type),
                    consents.c.scope, consents.c.subscribed, consents.c.source,
                    consents.c.changed_at).where(
        consents.c.workspace_id == workspace_id, consents.c.profile_id.in_(merged))
    stmt = insert(consents).from_select(
        ["workspace_id", "profile_id", "scope", "subscribed", "source", "changed_at"], source)
    await conn.execute(stmt.on_conflict_do_update(
        index_elements=[consents.c.workspace_id, consents.c.profile_id, consents.c.scope],
        set_={"subscribed": stmt.excluded.subscribed, "source": stmt.excluded.source,
              "changed_at": stmt.excluded.changed_at},
        where=consents.c.changed_at < stmt.excluded.changed_at))
