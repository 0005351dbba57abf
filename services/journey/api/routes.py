"""Journey management API: drafts, validation, publishing, stats."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert

from services.journey.domain.document import JourneyDocument
from services.journey.tables import instances, journey_versions, journeys
from shared.http.auth import AdminDep
from shared.http.problems import Problem

router = APIRouter(prefix="/v1/journeys", tags=["journeys"])


def _summary(row: Any) -> dict[str, Any]:
    return {"key": row["key"], "name": row["name"], "status": row["status"],
            "published_version": row["published_version"], "draft": row["draft"],
            "updated_at": row["updated_at"]}


@router.post("/validate")
async def validate_journey(doc: JourneyDocument, principal: AdminDep) -> dict[str, Any]:
    """Check a journey document without saving it (errors come back as 400 with paths)."""
    return {"valid": True, "key": doc.key}


@router.post("", status_code=201)
async def save_draft(doc: JourneyDocument, request: Request, principal: AdminDep) -> dict[str, Any]:
    """Create a journey or replace its draft. Published versions are never changed."""
    draft = doc.model_dump(mode="json", by_alias=True, exclude_none=True)
    upsert = insert(journeys).values(workspace_id=principal.workspace_id, key=doc.key,
                                     name=doc.name, status="draft", draft=draft)
    stmt = upsert.on_conflict_do_update(
        index_elements=[journeys.c.workspace_id, journeys.c.key],
        set_={"draft": draft, "name": doc.name, "updated_at": func.now()},
    ).returning(journeys)
    async with request.app.state.runtime.engine.begin() as conn:
        row = (await conn.execute(stmt)).mappings().one()
    return _summary(row)


@router.get("")
async def list_journeys(request: Request, principal: AdminDep) -> dict[str, Any]:
    """All journeys of the workspace."""
    async with request.app.state.runtime.engine.connect() as conn:
        rows = (await conn.execute(select(journeys).where(
            journeys.c.workspace_id == principal.workspace_id).order_by(journeys.c.key)
        )).mappings().all()
    return {"items": [_summary(r) for r in rows]}


@router.get("/{key}")
async def get_journey(key: str, request: Request, principal: AdminDep) -> dict[str, Any]:
    """One journey with its draft and published version number."""
    async with request.app.state.runtime.engine.connect() as conn:
        row = (await conn.execute(select(journeys).where(
            journeys.c.workspace_id == principal.workspace_id, journeys.c.key == key)
        )).mappings().first()
    if row is None:
        raise Problem(404, "Not found", f"no journey '{key}'")
    return _summary(row)


@router.post("/{key}/publish")
async def publish_journey(key: str, request: Request, principal: AdminDep) -> dict[str, Any]:
    """Freeze the draft as the next immutable version and make it live."""
    ws = principal.workspace_id
    async with request.app.state.runtime.engine.begin() as conn:
        row = (await conn.execute(select(journeys).where(
            journeys.c.workspace_id == ws, journeys.c.key == key).with_for_update()
        )).mappings().first()
        if row is None:
            raise Problem(404, "Not found", f"no journey '{key}'")
        if row["draft"] is None:
            raise Problem(409, "Nothing to publish", "the journey has no draft")
        version = (await conn.execute(select(func.coalesce(func.max(journey_versions.c.version),
                                                           0)).where(
            journey_versions.c.workspace_id == ws, journey_versions.c.key == key))).scalar_one() + 1
        await conn.execute(insert(journey_versions).values(
            workspace_id=ws, key=key, version=version, document=row["draft"]))
        row = (await conn.execute(update(journeys).where(
            journeys.c.workspace_id == ws, journeys.c.key == key).values(
            status="published", published_version=version, updated_at=func.now())
            .returning(journeys))).mappings().one()
    return _summary(row)


@router.get("/{key}/stats")
async def journey_stats(key: str, request: Request, principal: AdminDep) -> dict[str, Any]:
    """Customers per stage and status."""
    async with request.app.state.runtime.engine.connect() as conn:
        known = (await conn.execute(select(journeys.c.key).where(
            journeys.c.workspace_id == principal.workspace_id, journeys.c.key == key))).first()
        if known is None:
            raise Problem(404, "Not found", f"no journey '{key}'")
        rows = (await conn.execute(
            select(instances.c.stage, instances.c.status, func.count().label("n"))
            .where(instances.c.workspace_id == principal.workspace_id,
                   instances.c.journey_key == key)
            .group_by(instances.c.stage, instances.c.status)
        )).all()
    stages: dict[str, dict[str, int]] = {}
    for row in rows:
        stages.setdefault(row.stage, {})[row.status] = row.n
    return {"key": key, "entries": sum(r.n for r in rows), "stages": stages}
