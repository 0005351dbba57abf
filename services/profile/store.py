"""Profile persistence: resolve identities to one profile, merge, record events."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.profile.domain.identity import normalise_email
from services.profile.tables import events, identities, profiles
from shared.contracts.events import Event
from shared.contracts.profile import ProfileSnapshot


async def resolve(conn: AsyncConnection, workspace_id: str, ids: list[tuple[str, str]],
                  seen_at: datetime) -> tuple[dict[str, Any], list[str]]:
    """The profile these identifiers belong to, creating or merging as needed.

    Returns (profile row, ids of profiles merged into it).
    """
    found = (
        await conn.execute(
            select(identities.c.kind, identities.c.value, identities.c.profile_id).where(
                identities.c.workspace_id == workspace_id,
                tuple_(identities.c.kind, identities.c.value).in_(ids),
            )
        )
    ).all()
    profile_ids = list(dict.fromkeys(row.profile_id for row in found))
    merged: list[str] = []
    if not profile_ids:
        profile_id = str(uuid.uuid4())
        await conn.execute(insert(profiles).values(
            id=profile_id, workspace_id=workspace_id, traits={}, first_seen_at=seen_at,
            last_seen_at=seen_at))
    else:
        rows = (await conn.execute(
            select(profiles).where(profiles.c.id.in_(profile_ids)).order_by(profiles.c.created_at,
                                                                            profiles.c.id)
        )).mappings().all()
        # Deterministic survivor: the profile holding the user id, else the oldest.
        by_user = {r.profile_id for r in found if r.kind == "user_id"}
        survivor = next((r for r in rows if r["id"] in by_user), rows[0])
        profile_id = survivor["id"]
        merged = [r["id"] for r in rows if r["id"] != profile_id]
        if merged:
            await _merge(conn, survivor, [r for r in rows if r["id"] != profile_id])
    await conn.execute(
        insert(identities)
        .values([{"workspace_id": workspace_id, "kind": k, "value": v, "profile_id": profile_id}
                 for k, v in dict.fromkeys(ids)])
        .on_conflict_do_nothing()
    )
    row = (await conn.execute(select(profiles).where(profiles.c.id == profile_id))).mappings().one()
    return dict(row), merged


async def _merge(conn: AsyncConnection, survivor: Any, others: list[Any]) -> None:
    """Move identities and history of `others` under `survivor`; survivor's traits win."""
    other_ids = [o["id"] for o in others]
    traits: dict[str, Any] = {}
    for other in others:
        traits.update(other["traits"] or {})
    traits.update(survivor["traits"] or {})
    await conn.execute(update(identities).where(identities.c.profile_id.in_(other_ids))
                       .values(profile_id=survivor["id"]))
    await conn.execute(update(events).where(events.c.profile_id.in_(other_ids))
                       .values(profile_id=survivor["id"]))
    await conn.execute(update(profiles).where(profiles.c.id == survivor["id"]).values(
        traits=traits,
        event_count=survivor["event_count"] + sum(o["event_count"] for o in others),
        first_seen_at=min([survivor["first_seen_at"]] + [o["first_seen_at"] for o in others]),
        email=survivor["email"] or next((o["email"] for o in others if o["email"]), None),
        user_id=survivor["user_id"] or next((o["user_id"] for o in others if o["user_id"]), None),
    ))
    await conn.execute(delete(profiles).where(profiles.c.id.in_(other_ids)))


async def record_event(conn: AsyncConnection, profile: dict[str, Any], event: Event,
                       traits: dict[str, Any]) -> dict[str, Any]:
    """Store the event in the history and apply it to the profile; returns the new row."""
    inserted = await conn.execute(
        insert(events).values(
            workspace_id=event.workspace_id, event_id=event.id, profile_id=profile["id"],
            type=event.type.value, name=event.event or event.name, properties=event.properties,
            timestamp=event.timestamp, received_at=event.received_at,
        ).on_conflict_do_nothing()
    )
    values: dict[str, Any] = {
        "last_seen_at": func.greatest(profiles.c.last_seen_at, event.timestamp),
        "updated_at": func.now(),
        "event_count": profiles.c.event_count + inserted.rowcount,
    }
    if traits:
        values["traits"] = profiles.c.traits.op("||")(traits)
        if email := normalise_email(traits.get("email")):
            values["email"] = email
        if isinstance(traits.get("phone"), str):
            values["phone"] = traits["phone"][:32]
        if isinstance(traits.get("timezone"), str):
            values["timezone"] = traits["timezone"][:64]
    if event.user_id and not profile.get("user_id"):
        values["user_id"] = event.user_id
    row = (await conn.execute(
        update(profiles).where(profiles.c.id == profile["id"]).values(**values).returning(profiles)
    )).mappings().one()
    return dict(row)


def snapshot(row: dict[str, Any]) -> ProfileSnapshot:
    return ProfileSnapshot(
        profile_id=row["id"], user_id=row["user_id"], email=row["email"], phone=row["phone"],
        timezone=row["timezone"], traits=row["traits"] or {},
        metrics={"event_count": row["event_count"]},
    )
