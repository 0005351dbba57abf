"""Broadcast routes (admin key): create or replace a draft, list, show with counts,
preview the audience, send (or schedule, or resume), cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Request
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from services.journey.broadcasts import sender
from services.journey.broadcasts import store as bstore
from services.journey.broadcasts.audience import audience
from services.journey.broadcasts.preview import preview
from services.journey.domain.broadcast import KEY, BroadcastDocument
from services.journey.domain.policy import ContactPolicy
from services.journey.policy import store as policy_store
from services.journey.policy.api import parse_or_400
from services.journey.policy.directory import Directory, Unknown, caller_key
from services.journey.tables import broadcast_audience, broadcasts
from shared.http.auth import AdminDep
from shared.http.contracts import answers, json_body
from shared.http.deps import EngineDep
from shared.http.problems import Problem

router = APIRouter(prefix="/v1/broadcasts", tags=["broadcasts"])
profile_router = APIRouter(prefix="/v1/profiles", tags=["broadcasts"])
Key = Annotated[str, Path(min_length=1, max_length=90, pattern=KEY)]
BroadcastBody = Annotated[Any, Body(description="A broadcast (see docs/journey.md).")]


class BroadcastOut(BaseModel):
    key: str
    status: str
    broadcast: dict[str, Any]
    counts: dict[str, Any] = {}
    start_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None


class BroadcastList(BaseModel):
    items: list[BroadcastOut]


class PreviewOut(BaseModel):
    recipients: int
    suppressed: dict[str, int]
    sample: list[str]
    suppressed_sample: list[dict[str, str]]
    at: str


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _out(row: Any, counts: dict[str, Any] | None = None) -> BroadcastOut:
    return BroadcastOut(key=row["key"], status=row["status"], broadcast=row["document"],
                        counts=counts or {}, start_at=_iso(row["start_at"]),
                        started_at=_iso(row["started_at"]), finished_at=_iso(row["finished_at"]))


def _directory(request: Request) -> Directory:
    directory: Directory = request.app.state.directory
    return directory


@router.put("/{key}", response_model=BroadcastOut, responses=answers(None, 409),
            openapi_extra=json_body(BroadcastDocument, {
                "name": "Spring sale", "segment": "vip", "template": "spring-sale",
                "channel": "email", "send_at": "2026-03-20T09:00:00Z", "local_time": "09:00"}))
async def put_broadcast(key: Key, body: BroadcastBody, request: Request, engine: EngineDep,
                        principal: AdminDep) -> BroadcastOut:
    """Create or replace a draft broadcast (409 once it is scheduled, sent or cancelled)."""
    doc = parse_or_400(BroadcastDocument, body, "Invalid broadcast")
    ws, now = principal.workspace_id, request.app.state.clock.now()
    if doc.send_at is not None and doc.local_time is None and doc.send_at < now:
        raise Problem(400, "Invalid broadcast", "send_at: in the past",
                      errors=[{"field": "send_at", "message": "in the past"}])
    directory, caller = _directory(request), caller_key(request.headers.get("authorization"))
    try:
        meta = await directory.template(ws, doc.template, caller=caller)
    except Unknown:
        raise Problem(400, "Invalid broadcast", f"template: no template '{doc.template}'",
                      errors=[{"field": "template", "message": "unknown template"}]) from None
    if meta.channel != doc.channel:
        raise Problem(400, "Invalid broadcast", f"channel: template '{doc.template}' is a "
                      f"{meta.channel} template", errors=[{"field": "channel", "message":
                                                           f"the template is {meta.channel}"}])
    if doc.segment is not None and not await directory.segment_exists(ws, doc.segment,
                                                                      caller=caller):
        raise Problem(400, "Invalid broadcast", f"segment: no segment '{doc.segment}'",
                      errors=[{"field": "segment", "message": "unknown segment"}])
    document = doc.model_dump(mode="json", exclude_none=True)
    async with engine.begin() as conn:
        row = await bstore.load(conn, ws, key, lock=True)
        if row is not None and row["status"] != "draft":
            raise Problem(409, "Not editable", f"broadcast '{key}' is {row['status']}")
        await policy_store.remember_templates(conn, ws, {doc.template: meta})
        stmt = insert(broadcasts).values(workspace_id=ws, key=key, document=document,
                                         status="draft")
        row = (await conn.execute(stmt.on_conflict_do_update(
            index_elements=[broadcasts.c.workspace_id, broadcasts.c.key],
            set_={"document": document}).returning(broadcasts))).mappings().one()
    return _out(row)


@router.get("", response_model=BroadcastList)
async def list_broadcasts(engine: EngineDep, principal: AdminDep) -> BroadcastList:
    """The workspace's broadcasts, by key."""
    async with engine.connect() as conn:
        rows = (await conn.execute(select(broadcasts).where(
            broadcasts.c.workspace_id == principal.workspace_id,
            broadcasts.c.key.not_like("~%")).order_by(broadcasts.c.key))
        ).mappings().all()
    return BroadcastList(items=[_out(r) for r in rows])


async def _existing(request: Request, ws: str, key: str) -> Any:
    async with request.app.state.runtime.engine.connect() as conn:
        row = await bstore.load(conn, ws, key)
        if row is None:
            raise Problem(404, "Not found", f"no broadcast '{key}'")
        return row, await bstore.counts(conn, ws, key)


@router.get("/{key}", response_model=BroadcastOut, responses=answers(None, 404))
async def get_broadcast(key: Key, request: Request, principal: AdminDep) -> BroadcastOut:
    """One broadcast: its status and counts (sent, suppressed and why, deferred, ...)."""
    row, counts = await _existing(request, principal.workspace_id, key)
    return _out(row, counts)


@router.post("/{key}/preview", response_model=PreviewOut, responses=answers(None, 404))
async def preview_broadcast(key: Key, request: Request, engine: EngineDep,
                            principal: AdminDep) -> PreviewOut:
    """Who would get it and who would not, and why, as of its scheduled time: set-based
    queries over journey's profile snapshots (broadcasts/preview.py)."""
    ws = principal.workspace_id
    row, _ = await _existing(request, ws, key)
    doc = BroadcastDocument.model_validate(row["document"])
    now = request.app.state.clock.now()
    at = sender.start_moment(doc, now)
    ws_zone = await _directory(request).timezone(
        ws, caller=caller_key(request.headers.get("authorization")))
    async with engine.connect() as conn:
        loaded = (await policy_store.load_policies(conn, [ws])).get(ws)
        policy = loaded.policy if loaded else ContactPolicy()
        meta = (await policy_store.load_templates(conn, [ws])).get(ws, {}).get(doc.template)
        found = await preview(conn, await audience(conn, ws, doc, now), key, policy, meta,
                              now, at, ws_zone)
    return PreviewOut(recipients=found.recipients, suppressed=found.suppressed,
                      sample=found.sample, suppressed_sample=found.suppressed_sample,
                      at=at.isoformat())


@router.post("/{key}/send", response_model=BroadcastOut, responses=answers(None, 404, 409))
async def send_broadcast(key: Key, request: Request, engine: EngineDep,
                         principal: AdminDep) -> BroadcastOut:
    """Send now, or schedule at `send_at`; resume a cancelled one (only those not yet
    sent). 409 once sent."""
    ws, now = principal.workspace_id, request.app.state.clock.now()
    ws_zone = await _directory(request).timezone(
        ws, caller=caller_key(request.headers.get("authorization")))
    async with engine.begin() as conn:
        row = await bstore.load(conn, ws, key, lock=True)
        if row is None:
            raise Problem(404, "Not found", f"no broadcast '{key}'")
        if row["status"] == "sent":
            raise Problem(409, "Already sent", f"broadcast '{key}' was sent")
        if row["status"] in ("scheduled", "sending"):
            return _out(row, await bstore.counts(conn, ws, key))
        doc = BroadcastDocument.model_validate(row["document"])
        start = sender.start_moment(doc, now)
        if row["status"] == "cancelled" and row["started_at"] is not None:
            row = await bstore.set_status(conn, ws, key, status="sending", finished_at=None)
        elif start > now:
            row = await bstore.set_status(conn, ws, key, status="scheduled", start_at=start)
        else:
            await sender.freeze(conn, ws, key, doc, now, ws_zone)
            row = await bstore.set_status(conn, ws, key, status="sending", start_at=now,
                                          started_at=now)
        counts = await bstore.counts(conn, ws, key)
    return _out(row, counts)


@router.post("/{key}/cancel", response_model=BroadcastOut,
             responses=answers(None, 404, 409))
async def cancel_broadcast(key: Key, request: Request, engine: EngineDep,
                           principal: AdminDep) -> BroadcastOut:
    """Stop a scheduled or sending broadcast; `/send` resumes it. 409 when sent or draft."""
    ws, now = principal.workspace_id, request.app.state.clock.now()
    async with engine.begin() as conn:
        row = await bstore.load(conn, ws, key, lock=True)
        if row is None:
            raise Problem(404, "Not found", f"no broadcast '{key}'")
        if row["status"] not in ("scheduled", "sending", "cancelled"):
            raise Problem(409, "Not cancellable", f"broadcast '{key}' is {row['status']}")
        row = await bstore.set_status(conn, ws, key, status="cancelled", finished_at=now)
        counts = await bstore.counts(conn, ws, key)
    return _out(row, counts)


class RecipientOut(BaseModel):
    broadcast: str
    status: str
    reason: str | None
    due_at: str | None
    held_since: str | None
    updated_at: str | None


class RecipientList(BaseModel):
    profile_id: str
    items: list[RecipientOut]


@profile_router.get("/{profile_id}/broadcasts", response_model=RecipientList)
async def profile_broadcasts(profile_id: Annotated[str, Path(min_length=1, max_length=36)],
                             engine: EngineDep, principal: AdminDep) -> RecipientList:
    """Why did (or didn't) this customer get a broadcast: each broadcast they were in the
    audience of, with its outcome (sent, pending with its due time, deferred since,
    suppressed, held or expired, and the reason)."""
    a = broadcast_audience.c
    async with engine.connect() as conn:
        rows = (await conn.execute(select(broadcast_audience).where(
            a.workspace_id == principal.workspace_id, a.profile_id == profile_id,
            a.broadcast_key.not_like("~%")).order_by(a.updated_at.desc()).limit(500))).all()
    return RecipientList(profile_id=profile_id, items=[RecipientOut(
        broadcast=r.broadcast_key, status=r.status, reason=r.reason, due_at=_iso(r.due_at),
        held_since=_iso(r.held_since), updated_at=_iso(r.updated_at)) for r in rows])
