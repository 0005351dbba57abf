"""Profile API: read profiles by id or identifier, search, history, metrics, consent, erase."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.profile import commands
from services.profile import repository as repo
from services.profile.api.schemas import (
    ConsentRecorded,
    Erased,
    ProfileConsent,
    ProfileEventPage,
    ProfileMetricsOut,
    ProfileOut,
    ProfilePage,
    ProfileSegments,
)
from services.profile.api.views import public_profile, summary
from services.profile.domain.identity import normalise_email, normalise_phone
from services.profile.domain.snapshot import metrics, snapshot
from services.profile.domain.state import ProfileState
from services.profile.tables import events, identities, profiles, segment_members
from shared.auth import Principal
from shared.conditions import BoundedTime
from shared.contracts.profile import ProfileSnapshot
from shared.contracts.send import PROFILE_CHANNELS
from shared.http.auth import AdminDep
from shared.http.contracts import answers
from shared.http.deps import EngineDep, RuntimeDep
from shared.http.paging import Limit, Offset
from shared.http.problems import Problem

router = APIRouter(prefix="/v1/profiles", tags=["profiles"])
Text = Annotated[str | None, Query(min_length=1, max_length=320)]


async def _load(conn: AsyncConnection, principal: Principal, profile_id: str,
                *, lock: bool = False) -> ProfileState:
    if len(profile_id) > 36:
        raise Problem(404, "Not found", "no such profile")
    live = await commands.resolve_id(conn, principal.workspace_id, profile_id)
    if live is None:
        raise Problem(404, "Not found", "no such profile")
    if lock:
        return (await repo.lock_profiles(conn, [live]))[live]
    row = (await conn.execute(select(profiles).where(profiles.c.id == live))).mappings().one()
    return repo.state_from_row(row)


async def _full(conn: AsyncConnection, p: ProfileState) -> dict[str, Any]:
    conv = (await repo.conventions_for(conn, [p.workspace_id]))[p.workspace_id]
    members = (await repo.memberships(conn, [p.id]))[p.id]
    # Ids of profiles merged into this one (their messages and journeys keep the old id).
    merged = (await conn.execute(select(identities.c.value).where(
        identities.c.profile_id == p.id, identities.c.workspace_id == p.workspace_id,
        identities.c.kind == "profile_id", identities.c.value != p.id)
        .order_by(identities.c.value))).scalars().all()
    return public_profile(p, sorted(members), conv, datetime.now(UTC)) | {
        "merged_ids": list(merged)}


@router.get("", responses=answers(ProfilePage))
async def search_profiles(
    engine: EngineDep, principal: AdminDep, limit: Limit = 50, offset: Offset = 0,
    q: Annotated[str | None, Query(min_length=1, max_length=100,
                                   description="Part of email, user id, phone or name.")] = None,
    segment: Annotated[str | None, Query(max_length=100)] = None,
    lifecycle_stage: Annotated[str | None, Query(max_length=20)] = None,
    rfm_segment: Annotated[str | None, Query(max_length=40)] = None,
) -> dict[str, Any]:
    """Search profiles (newest activity first) by text, segment, lifecycle stage or RFM segment."""
    stmt = select(profiles).where(profiles.c.workspace_id == principal.workspace_id)
    if q:
        like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(or_(profiles.c.email.ilike(like), profiles.c.user_id.ilike(like),
                              profiles.c.phone.ilike(like), profiles.c.id == q,
                              profiles.c.traits["name"].astext.ilike(like),
                              profiles.c.traits["first_name"].astext.ilike(like),
                              profiles.c.traits["last_name"].astext.ilike(like)))
    if segment:
        stmt = stmt.where(profiles.c.id.in_(select(segment_members.c.profile_id).where(
            segment_members.c.workspace_id == principal.workspace_id,
            segment_members.c.segment_key == segment)))
    if lifecycle_stage:
        stmt = stmt.where(profiles.c.lifecycle_stage == lifecycle_stage)
    if rfm_segment:
        stmt = stmt.where(profiles.c.rfm_segment == rfm_segment)
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt.order_by(profiles.c.last_seen_at.desc(), profiles.c.id)
                                   .limit(limit).offset(offset))).mappings().all()
    return {"items": [summary(repo.state_from_row(r)) for r in rows],
            "limit": limit, "offset": offset}


@router.get("/lookup", responses=answers(ProfileOut, 404))
async def lookup_profile(engine: EngineDep, principal: AdminDep, user_id: Text = None,
                         anonymous_id: Text = None, email: Text = None,
                         phone: Text = None) -> dict[str, Any]:
    """Find a profile by any identifier: user_id, anonymous_id, email or phone (first given)."""
    if phone and normalise_phone(phone) is None:
        raise Problem(400, "Invalid request", "phone: not a valid number in E.164 (+...)",
                      errors=[{"field": "query.phone", "message": "not a valid E.164 number"}])
    wanted = [("user_id", user_id), ("anonymous_id", anonymous_id),
              ("email", normalise_email(email) if email else None),
              ("phone", normalise_phone(phone) if phone else None)]
    pairs = [(k, v) for k, v in wanted if v]
    if not pairs:
        raise Problem(400, "Invalid request",
                      "give user_id, anonymous_id, email or phone (phone in E.164, +...)",
                      errors=[{"field": "query", "message": "one identifier is required"}])
    kind, value = pairs[0]
    # An id only ever seen as alias's previous id is stored as kind `alias`.
    kinds = [kind, "alias"] if kind in ("user_id", "anonymous_id") else [kind]
    async with engine.connect() as conn:
        pid = (await conn.execute(select(identities.c.profile_id).where(
            identities.c.workspace_id == principal.workspace_id, identities.c.kind.in_(kinds),
            identities.c.value == value[:320]).order_by(identities.c.kind.desc()).limit(1)
        )).scalar_one_or_none()
        if pid is None:
            raise Problem(404, "Not found", "no profile has that identifier")
        return await _full(conn, await _load(conn, principal, pid))


@router.get("/{profile_id}", responses=answers(ProfileOut, 404))
async def get_profile(profile_id: str, engine: EngineDep, principal: AdminDep) -> dict[str, Any]:
    """One profile by id (an id merged into another profile answers with the survivor)."""
    async with engine.connect() as conn:
        return await _full(conn, await _load(conn, principal, profile_id))


@router.get("/{profile_id}/events", responses=answers(ProfileEventPage, 404))
async def list_profile_events(
    profile_id: str, engine: EngineDep, principal: AdminDep, limit: Limit = 50,
    offset: Offset = 0, name: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """The profile's event history, newest first (tracked events and delivery outcomes)."""
    async with engine.connect() as conn:
        p = await _load(conn, principal, profile_id)
        stmt = select(events).where(events.c.workspace_id == principal.workspace_id,
                                    events.c.profile_id == p.id)
        if name:
            stmt = stmt.where(events.c.name == name)
        rows = (await conn.execute(stmt.order_by(events.c.timestamp.desc(), events.c.event_id)
                                   .limit(limit).offset(offset))).mappings().all()
    items = [{"id": r["event_id"], "type": r["type"], "name": r["name"],
              "properties": r["properties"], "timestamp": r["timestamp"].isoformat()}
             for r in rows]
    return {"items": items, "limit": limit, "offset": offset}


@router.get("/{profile_id}/metrics", responses=answers(ProfileMetricsOut, 404))
async def get_profile_metrics(profile_id: str, engine: EngineDep,
                              principal: AdminDep) -> dict[str, Any]:
    """Computed metrics: orders, revenue, RFM, lifecycle, churn risk, predicted LTV, NPS."""
    async with engine.connect() as conn:
        p = await _load(conn, principal, profile_id)
        conv = (await repo.conventions_for(conn, [p.workspace_id]))[p.workspace_id]
    return {"profile_id": p.id, "lifecycle_stage": p.lifecycle_stage,
            "rfm_segment": p.rfm.get("segment") if p.rfm else None,
            "metrics": metrics(p, datetime.now(UTC), conv)}


@router.get("/{profile_id}/segments", responses=answers(ProfileSegments, 404))
async def get_profile_segments(profile_id: str, engine: EngineDep,
                               principal: AdminDep) -> dict[str, Any]:
    """The segments the profile is a member of, with when it entered."""
    async with engine.connect() as conn:
        p = await _load(conn, principal, profile_id)
        rows = (await conn.execute(select(segment_members.c.segment_key,
                                          segment_members.c.entered_at)
                                   .where(segment_members.c.profile_id == p.id)
                                   .order_by(segment_members.c.segment_key))).all()
    return {"profile_id": p.id, "items": [{"segment": r.segment_key,
                                           "entered_at": r.entered_at.isoformat()} for r in rows]}


@router.get("/{profile_id}/snapshot", response_model=ProfileSnapshot,
            responses=answers(None, 404))
async def get_profile_snapshot(profile_id: str, engine: EngineDep,
                               principal: AdminDep) -> ProfileSnapshot:
    """The profile snapshot that send commands carry (for previews that match a real send)."""
    async with engine.connect() as conn:
        p = await _load(conn, principal, profile_id)
        conv = (await repo.conventions_for(conn, [p.workspace_id]))[p.workspace_id]
        members = (await repo.memberships(conn, [p.id]))[p.id]
    return snapshot(p, sorted(members), datetime.now(UTC), conv)


@router.get("/{profile_id}/consent", responses=answers(ProfileConsent, 404))
async def get_profile_consent(profile_id: str, engine: EngineDep,
                              principal: AdminDep) -> dict[str, Any]:
    """Consent per channel and topic (with source and time), and address validity."""
    async with engine.connect() as conn:
        p = await _load(conn, principal, profile_id)
    return {"profile_id": p.id, "consent": p.consent, "addresses": p.addresses,
            "push_tokens": [{"token": t, **v} for t, v in p.push_tokens.items()]}


class ConsentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"channel": "email", "subscribed": False, "source": "preference-center"}],
        "oneOf": [{"properties": {"channel": {"type": "string"}}, "required": ["channel"]},
                  {"properties": {"topic": {"type": "string"}}, "required": ["topic"]}]})
    channel: str | None = Field(default=None, pattern=f"^({'|'.join(PROFILE_CHANNELS)})$")
    topic: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-.]{1,100}$")
    subscribed: bool
    source: str = Field(default="api", min_length=1, max_length=100)
    at: BoundedTime | None = Field(default=None, description="When the decision was made "
                                                              "(1970-2200); default now.")

    @model_validator(mode="after")
    def _one_target(self) -> ConsentUpdate:
        if (self.channel is None) == (self.topic is None):
            raise ValueError("give exactly one of channel or topic")
        return self


@router.put("/{profile_id}/consent", responses=answers(ConsentRecorded, 404))
async def put_profile_consent(profile_id: str, body: ConsentUpdate, rt: RuntimeDep,
                              principal: AdminDep) -> dict[str, Any]:
    """Record a subscribe/unsubscribe for a channel or a topic; emits consent_changed."""
    at = body.at or datetime.now(UTC)
    if at.tzinfo is None:
        raise Problem(400, "Invalid request", "at: needs a time zone",
                      errors=[{"field": "at", "message": "needs a time zone"}])
    key = body.channel or f"topic:{body.topic}"
    async with rt.engine.begin() as conn:
        p = await _load(conn, principal, profile_id, lock=True)
        ids = await commands.record_consent(conn, rt.settings, p, key, body.subscribed,
                                            body.source, at)
    await rt.publish(ids)
    return {"profile_id": p.id, "consent": p.consent}


@router.delete("/{profile_id}", responses=answers(Erased, 404))
async def erase_profile(profile_id: str, rt: RuntimeDep, principal: AdminDep) -> dict[str, Any]:
    """GDPR erasure: delete personal data and history; keep hashed identifiers as a tombstone."""
    async with rt.engine.begin() as conn:
        p = await _load(conn, principal, profile_id)
        ids = await commands.erase(conn, rt.settings, principal.workspace_id, p.id,
                                   datetime.now(UTC))
    await rt.publish(ids)
    return {"id": p.id, "erased": True}
