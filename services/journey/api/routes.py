"""Journey management API: drafts, validation, versions, lifecycle, simulation."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Request
from pydantic import ValidationError
from sqlalchemy import DateTime, String, func, insert, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.journey.api.schemas import (
    JourneyList,
    JourneyOut,
    JourneyPublished,
    JourneySaved,
    JourneySummary,
    JourneyVersionOut,
    SimulateRequest,
    SimulationOut,
    Validated,
)
from services.journey.broadcasts import entries
from services.journey.domain.document import JourneyDocument
from services.journey.domain.policy import in_control
from services.journey.domain.simulate import Workspace, simulate
from services.journey.policy import store as policy_store
from services.journey.policy.checks import cap_warnings, check_references
from services.journey.policy.directory import caller_key
from services.journey.policy.store import remember_templates
from services.journey.tables import decisions, instances, journey_versions, journeys, snapshots
from shared.http.auth import AdminDep
from shared.http.contracts import answers, json_body
from shared.http.deps import EngineDep
from shared.http.problems import Problem, field_errors

router = APIRouter(prefix="/v1/journeys", tags=["journeys"])


def _summary(row: Any) -> dict[str, Any]:
    return {"key": row["key"], "name": row["name"], "status": row["status"],
            "published_version": row["published_version"], "draft": row["draft"],
            "updated_at": row["updated_at"]}


def parse_document(body: Any) -> JourneyDocument:
    """A journey document or a 400 naming each wrong field and why."""
    try:
        return JourneyDocument.model_validate(body)
    except ValidationError as exc:
        errors = field_errors(exc)
        raise Problem(400, "Invalid journey", "; ".join(
            f"{e['field']}: {e['message']}" for e in errors[:5]), errors=errors) from exc


JSONBody = Annotated[Any, Body(description="A journey document (see docs/journey.md).")]
# Parsed by `parse_document` (its 400 names each field): declared for OpenAPI only.
JOURNEY_BODY = json_body(JourneyDocument, {
    "key": "post-purchase-review", "name": "Review request after purchase",
    "stages": [{"key": "purchased", "enter": {"event": "Order Completed"}, "steps": [
        {"id": "settle", "wait": "P2D"},
        {"id": "ask", "send": {"channel": "email", "template": "review-request"}}]}],
    "goal": {"event": "Review Submitted", "within": "P14D"}, "holdout_percent": 10})


async def _journey(conn: AsyncConnection, workspace_id: str, key: str, *,
                   lock: bool = False) -> Any:
    stmt = select(journeys).where(journeys.c.workspace_id == workspace_id, journeys.c.key == key)
    row = (await conn.execute(stmt.with_for_update() if lock else stmt)).mappings().first()
    if row is None:
        raise Problem(404, "Not found", f"no journey '{key}'")
    return row


@router.post("/validate", responses=answers(Validated), openapi_extra=JOURNEY_BODY)
async def validate_journey(body: JSONBody, principal: AdminDep) -> dict[str, Any]:
    """Check a journey document without saving it (errors come back as 400 with paths)."""
    doc = parse_document(body)
    return {"valid": True, "key": doc.key}


@router.post("", status_code=201, responses=answers(JourneySaved, 409, status=201),
             openapi_extra=JOURNEY_BODY)
async def save_draft(body: JSONBody, request: Request, engine: EngineDep,
                     principal: AdminDep) -> dict[str, Any]:
    """Create a journey or replace its draft. Published versions are never changed."""
    doc = parse_document(body)
    draft = doc.model_dump(mode="json", by_alias=True, exclude_none=True)
    metas = await check_references(request.app.state.directory, principal.workspace_id, doc,
                                   caller_key(request.headers.get("authorization")))
    async with engine.begin() as conn:
        await remember_templates(conn, principal.workspace_id, metas)
        warnings = await cap_warnings(conn, principal.workspace_id, doc)
        existing = (await conn.execute(select(journeys.c.status).where(
            journeys.c.workspace_id == principal.workspace_id, journeys.c.key == doc.key)
            .with_for_update())).first()
        if existing is not None and existing.status == "archived":
            raise Problem(409, "Archived", f"journey '{doc.key}' is archived; use a new key")
        upsert = pg_insert(journeys).values(workspace_id=principal.workspace_id, key=doc.key,
                                            name=doc.name, status="draft", draft=draft)
        row = (await conn.execute(upsert.on_conflict_do_update(
            index_elements=[journeys.c.workspace_id, journeys.c.key],
            set_={"draft": draft, "name": doc.name, "updated_at": func.now()},
        ).returning(journeys))).mappings().one()
    return _summary(row) | ({"warnings": warnings} if warnings else {})


@router.get("", responses=answers(JourneyList))
async def list_journeys(engine: EngineDep, principal: AdminDep,
                        include: Annotated[Literal["stats"] | None, Query(
                            description="`stats`: add each journey's counts (one query for "
                                        "all): entries, active, customers, converted.")] = None,
                        ) -> dict[str, Any]:
    """All journeys of the workspace (with `include=stats`, their counts too)."""
    ws = principal.workspace_id
    async with engine.connect() as conn:
        rows = (await conn.execute(select(journeys).where(
            journeys.c.workspace_id == ws).order_by(journeys.c.key))).mappings().all()
        counts = {}
        if include == "stats":
            i = instances.c
            counts = {r.journey_key: {
                "entries": r.entries, "active": r.active, "customers": r.customers,
                "converted": r.converted} for r in (await conn.execute(select(
                    i.journey_key, func.count().label("entries"),
                    func.count().filter(i.status == "active").label("active"),
                    func.count(i.profile_id.distinct()).label("customers"),
                    func.count(i.profile_id.distinct()).filter(
                        i.goal_at.is_not(None), i.holdout.is_(False)).label("converted"))
                .where(i.workspace_id == ws).group_by(i.journey_key))).all()}
    empty = {"entries": 0, "active": 0, "customers": 0, "converted": 0}
    return {"items": [_summary(r) | ({"stats": counts.get(r["key"], empty)}
                                     if include == "stats" else {}) for r in rows]}


@router.get("/{key}", responses=answers(JourneyOut, 404))
async def get_journey(key: str, engine: EngineDep, principal: AdminDep) -> dict[str, Any]:
    """One journey: summary, draft and the list of its published versions."""
    async with engine.connect() as conn:
        row = await _journey(conn, principal.workspace_id, key)
        versions = (await conn.execute(
            select(journey_versions.c.version, journey_versions.c.published_at).where(
                journey_versions.c.workspace_id == principal.workspace_id,
                journey_versions.c.key == key).order_by(journey_versions.c.version))).all()
    return _summary(row) | {"versions": [{"version": v.version, "published_at": v.published_at}
                                         for v in versions]}


@router.get("/{key}/versions/{version}", responses=answers(JourneyVersionOut, 404))
async def get_version(key: str, version: int, engine: EngineDep,
                      principal: AdminDep) -> dict[str, Any]:
    """One published version's document (immutable)."""
    async with engine.connect() as conn:
        row = (await conn.execute(select(journey_versions).where(
            journey_versions.c.workspace_id == principal.workspace_id,
            journey_versions.c.key == key, journey_versions.c.version == version))).first()
    if row is None:
        raise Problem(404, "Not found", f"journey '{key}' has no version {version}")
    return {"key": key, "version": version, "published_at": row.published_at,
            "document": row.document}


@router.post("/{key}/publish", responses=answers(JourneyPublished, 404, 409))
async def publish_journey(key: str, request: Request, engine: EngineDep,
                          principal: AdminDep) -> dict[str, Any]:
    """Freeze the draft as the next immutable version and make it live. Customers already
    inside finish on the version they entered."""
    ws = principal.workspace_id
    async with engine.begin() as conn:
        row = await _journey(conn, ws, key, lock=True)
        if row["status"] == "archived":
            raise Problem(409, "Archived", f"journey '{key}' is archived")
        if row["draft"] is None:
            raise Problem(409, "Nothing to publish", "the journey has no draft")
        version = (await conn.execute(select(func.coalesce(func.max(journey_versions.c.version),
                                                           0)).where(
            journey_versions.c.workspace_id == ws, journey_versions.c.key == key))).scalar_one() + 1
        version_doc = row["draft"]
        await conn.execute(insert(journey_versions).values(
            workspace_id=ws, key=key, version=version, document=version_doc))
        row = (await conn.execute(update(journeys).where(
            journeys.c.workspace_id == ws, journeys.c.key == key).values(
            status="published", published_version=version, draft=None, updated_at=func.now())
            .returning(journeys))).mappings().one()
        queued = await entries.schedule(conn, ws, key, version_doc, request.app.state
                                        .clock.now()) if _includes_existing(version_doc) else 0
    return _summary(row) | ({"existing_members_queued": queued} if queued else {})


def _includes_existing(document: dict[str, Any]) -> bool:
    return any((s.get("enter") or {}).get("include_existing") for s in document["stages"])


async def _move(request: Request, ws: str, key: str, allowed: set[str], to: str) -> Any:
    async with request.app.state.runtime.engine.begin() as conn:
        row = await _journey(conn, ws, key, lock=True)
        if row["status"] not in allowed:
            raise Problem(409, "Not allowed", f"journey '{key}' is {row['status']}; this needs "
                                              f"{' or '.join(sorted(allowed))}")
        row = (await conn.execute(update(journeys).where(
            journeys.c.workspace_id == ws, journeys.c.key == key).values(
            status=to, updated_at=func.now()).returning(journeys))).mappings().one()
        if to == "archived":
            await _exit_everyone(conn, ws, key, request.app.state.clock.now())
    return row


@router.post("/{key}/pause", responses=answers(JourneySummary, 404, 409))
async def pause_journey(key: str, request: Request, principal: AdminDep) -> dict[str, Any]:
    """Stop new entries; customers inside carry on (their timers keep firing)."""
    return _summary(await _move(request, principal.workspace_id, key, {"published"}, "paused"))


@router.post("/{key}/resume", responses=answers(JourneySummary, 404, 409))
async def resume_journey(key: str, request: Request, principal: AdminDep) -> dict[str, Any]:
    """Take new entries again on the published version."""
    return _summary(await _move(request, principal.workspace_id, key, {"paused"}, "published"))


@router.post("/{key}/archive", responses=answers(JourneySummary, 404, 409))
async def archive_journey(key: str, request: Request, principal: AdminDep) -> dict[str, Any]:
    """End the journey: no new entries, every customer inside exits now (timers cancelled)."""
    return _summary(await _move(request, principal.workspace_id, key,
                                {"draft", "published", "paused"}, "archived"))


async def _exit_everyone(conn: AsyncConnection, ws: str, key: str, now: datetime) -> None:
    i = instances.c
    scope = (i.workspace_id == ws) & (i.journey_key == key) & (i.status == "active")
    await conn.execute(insert(decisions).from_select(
        ["workspace_id", "profile_id", "journey_key", "version", "instance_id", "instance_key",
         "stage", "step", "kind", "outcome", "reason", "at"],
        select(i.workspace_id, i.profile_id, i.journey_key, i.version, i.id, i.instance_key,
               i.stage, i.step, literal("exit", String), literal("exited", String),
               literal("journey archived", String),
               literal(now, DateTime(timezone=True))).where(scope)))
    await conn.execute(update(instances).where(scope).values(
        status="exited", exit_reason="journey archived", ended_at=now, wake_at=None,
        wake_kind=None, updated_at=func.now()))


@router.post("/{key}/simulate", responses=answers(SimulationOut, 404))
async def simulate_journey(key: str, body: SimulateRequest, request: Request, engine: EngineDep,
                           principal: AdminDep,
                           version: Annotated[int | None, Query(
                               ge=1, description="A published version; default: the draft, "
                                                 "else the live version.")] = None,
                           ) -> dict[str, Any]:
    """Run the journey against a given profile and events on virtual time; sends nothing.
    The workspace's contact policy applies (caps counting the simulated sends, quiet
    hours, control group, on-hold). Returns the decision trace and the sends that would
    have gone out."""
    async with engine.connect() as conn:
        row = await _journey(conn, principal.workspace_id, key)
        document = row["draft"] if version is None else None
        used = "draft"
        if document is None:
            wanted = version or row["published_version"]
            found = (await conn.execute(select(journey_versions.c.document).where(
                journey_versions.c.workspace_id == principal.workspace_id,
                journey_versions.c.key == key, journey_versions.c.version == wanted))).first()
            if found is None:
                raise Problem(404, "Not found", f"journey '{key}' has no version {wanted}")
            document, used = found.document, f"version {wanted}"
    doc = JourneyDocument.model_validate(document)
    start = body.start or request.app.state.clock.now()
    profile = body.profile_dict()
    workspace = await _simulated_workspace(request, engine, principal.workspace_id,
                                           str(profile.get("profile_id") or "simulated"))
    result = simulate(doc, profile, body.timeline(start), start=start, horizon=body.horizon,
                      workspace=workspace)
    return {"key": key, "ran": used, "start": start} | result


async def _simulated_workspace(request: Request, engine: EngineDep, workspace_id: str,
                               profile_id: str) -> Workspace:
    """The workspace as the engine would see it for this profile: its contact policy and
    template facts, the profile's control group membership (kept, if journey has seen the
    profile; else as it would be decided now) and the workspace zone."""
    async with engine.connect() as conn:
        loaded = (await policy_store.load_policies(conn, [workspace_id])).get(workspace_id)
        templates = (await policy_store.load_templates(conn, [workspace_id])).get(
            workspace_id, {})
        seen = (await conn.execute(select(snapshots.c.control).where(
            snapshots.c.workspace_id == workspace_id,
            snapshots.c.profile_id == profile_id))).scalar_one_or_none()
    if loaded is None:
        control = False
    elif seen is not None:
        control = bool(seen)
    else:
        control = in_control(loaded.salt, profile_id, loaded.policy.control_group_percent)
    directory = request.app.state.directory
    zone = (await directory.timezone(workspace_id, caller=caller_key(
        request.headers.get("authorization"))) if directory.settings.profile_url else None)
    return Workspace(loaded.policy if loaded else None, templates, control, zone)
