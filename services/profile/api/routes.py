"""Profile management API: read profiles and their event history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from sqlalchemy import select

from services.profile.domain.identity import normalise_email
from services.profile.tables import events, identities, profiles
from shared.http.auth import AdminDep
from shared.http.paging import Limit, Offset
from shared.http.problems import Problem

router = APIRouter(prefix="/v1/profiles", tags=["profiles"])


def _public(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"], "user_id": row["user_id"], "email": row["email"],
        "phone": row["phone"], "timezone": row["timezone"], "traits": row["traits"],
        "event_count": row["event_count"], "first_seen_at": row["first_seen_at"],
        "last_seen_at": row["last_seen_at"],
    }


@router.get("/lookup")
async def lookup_profile(
    request: Request, principal: AdminDep,
    user_id: str | None = Query(None, max_length=255),
    anonymous_id: str | None = Query(None, max_length=255),
    email: str | None = Query(None, max_length=320),
) -> dict[str, Any]:
    """Find a profile by any identifier (user_id, anonymous_id or email)."""
    wanted = [("user_id", user_id), ("anonymous_id", anonymous_id),
              ("email", normalise_email(email) if email else None)]
    pairs = [(k, v) for k, v in wanted if v]
    if not pairs:
        raise Problem(400, "Invalid request", "give user_id, anonymous_id or email")
    kind, value = pairs[0]
    async with request.app.state.runtime.engine.connect() as conn:
        row = (await conn.execute(
            select(profiles).join(identities, identities.c.profile_id == profiles.c.id).where(
                identities.c.workspace_id == principal.workspace_id,
                identities.c.kind == kind, identities.c.value == value)
        )).mappings().first()
    if row is None:
        raise Problem(404, "Not found", "no profile has that identifier")
    return _public(row)


@router.get("/{profile_id}")
async def get_profile(profile_id: str, request: Request, principal: AdminDep) -> dict[str, Any]:
    """One profile by id."""
    async with request.app.state.runtime.engine.connect() as conn:
        row = (await conn.execute(select(profiles).where(
            profiles.c.id == profile_id, profiles.c.workspace_id == principal.workspace_id)
        )).mappings().first()
    if row is None:
        raise Problem(404, "Not found", "no such profile")
    return _public(row)


@router.get("/{profile_id}/events")
async def list_profile_events(profile_id: str, request: Request, principal: AdminDep,
                              limit: Limit = 50, offset: Offset = 0) -> dict[str, Any]:
    """The profile's event history, newest first."""
    async with request.app.state.runtime.engine.connect() as conn:
        rows = (await conn.execute(
            select(events).where(events.c.workspace_id == principal.workspace_id,
                                 events.c.profile_id == profile_id)
            .order_by(events.c.timestamp.desc(), events.c.event_id).limit(limit).offset(offset)
        )).mappings().all()
    items = [{"id": r["event_id"], "type": r["type"], "name": r["name"],
              "properties": r["properties"], "timestamp": _iso(r["timestamp"])} for r in rows]
    return {"items": items, "limit": limit, "offset": offset}


def _iso(value: datetime) -> str:
    return value.isoformat()
