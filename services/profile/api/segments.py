"""Segment API: rule-based segments (the journeys' condition tree plus event aggregates)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert

from services.profile import segment_admin, segment_store
from services.profile.domain.segments import Rule, rule_adapter
from services.profile.tables import segment_members, segments
from shared.http.auth import AdminDep
from shared.http.paging import Limit, Offset
from shared.http.problems import Problem

router = APIRouter(prefix="/v1/segments", tags=["segments"])
SYNC_PAGES = 20  # of 1000 profiles: what a PUT computes before answering
Key = Path(pattern=r"^[a-z0-9][a-z0-9_\-]{0,99}$", description="Segment key.")


class SegmentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    rule: Rule = Field(description="Condition tree over `profile.*` plus `performed` "
                                   "aggregates; see docs/profile.md.")
    reporting: bool = Field(default=False, description="Count the KPIs of its members "
                            "apart: /v1/kpis?segment=KEY (docs/metrics.md).")


def _public(row: Any, count: int | None = None) -> dict[str, Any]:
    out = {"key": row.key, "name": row.name, "description": row.description, "rule": row.rule,
           "created_at": row.created_at.isoformat(), "updated_at": row.updated_at.isoformat(),
           "computed": row.computed_at is not None,
           "reporting": row.reporting}
    if count is not None:
        out["count"] = count
    return out


@router.put("/{key}")
async def put_segment(body: SegmentBody, request: Request, principal: AdminDep,
                      key: str = Key) -> dict[str, Any]:
    """Create or replace a segment; membership is computed now (`computed` false: the
    scheduled pass finishes a large workspace) and kept live as events arrive."""
    rt = request.app.state.runtime
    ws = principal.workspace_id
    rule_json = rule_adapter.dump_python(body.rule, mode="json", by_alias=True,
                                         exclude_defaults=True)
    async with rt.engine.begin() as conn:
        stmt = insert(segments).values(workspace_id=ws, key=key, name=body.name,
                                       description=body.description, rule=rule_json,
                                       reporting=body.reporting)
        row = (await conn.execute(stmt.on_conflict_do_update(
            index_elements=["workspace_id", "key"],
            set_={"name": body.name, "description": body.description, "rule": rule_json,
                  "reporting": body.reporting, "updated_at": func.now(),
                  "computed_at": None}).returning(segments))).one()
    # Membership is computed in pages, one transaction each. A large workspace is finished
    # by the scheduled pass (`computed` false until then), so the request stays short.
    now, after, pages = datetime.now(UTC), "", 0
    last: str | None = ""
    while pages < SYNC_PAGES:
        async with rt.engine.begin() as conn:
            ids, last = await segment_admin.reevaluate(conn, rt.settings, ws, {key: body.rule},
                                                       now, after=after)
        await rt.relay.publish(ids)
        pages += 1
        if last is None:
            async with rt.engine.begin() as conn:
                await segment_store.mark_computed(conn, ws, {key: row.updated_at})
            break
        after = last
    return {**_public(row, await _count(request, ws, key)), "computed": last is None}


async def _count(request: Request, ws: str, key: str) -> int:
    async with request.app.state.runtime.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(segment_members).where(
            segment_members.c.workspace_id == ws,
            segment_members.c.segment_key == key))).scalar_one())


@router.get("")
async def list_segments(request: Request, principal: AdminDep, limit: Limit = 50,
                        offset: Offset = 0) -> dict[str, Any]:
    """The workspace's segments, by key."""
    async with request.app.state.runtime.engine.connect() as conn:
        rows = (await conn.execute(select(segments).where(
            segments.c.workspace_id == principal.workspace_id).order_by(segments.c.key)
            .limit(limit).offset(offset))).all()
    return {"items": [_public(r) for r in rows], "limit": limit, "offset": offset}


@router.get("/{key}")
async def get_segment(request: Request, principal: AdminDep, key: str = Key) -> dict[str, Any]:
    """One segment with its member count."""
    async with request.app.state.runtime.engine.connect() as conn:
        row = (await conn.execute(select(segments).where(
            segments.c.workspace_id == principal.workspace_id, segments.c.key == key))).first()
    if row is None:
        raise Problem(404, "Not found", f"no segment '{key}'")
    return _public(row, await _count(request, principal.workspace_id, key))


@router.get("/{key}/count")
async def count_segment(request: Request, principal: AdminDep,
                        key: str = Key) -> dict[str, Any]:
    """How many profiles are in the segment now."""
    await get_segment(request, principal, key)
    return {"key": key, "count": await _count(request, principal.workspace_id, key)}


@router.get("/{key}/members")
async def list_segment_members(request: Request, principal: AdminDep, key: str = Key,
                               limit: Limit = 50, offset: Offset = 0) -> dict[str, Any]:
    """Members, earliest entry first: profile id and when they entered."""
    await get_segment(request, principal, key)
    m = segment_members
    async with request.app.state.runtime.engine.connect() as conn:
        rows = (await conn.execute(select(m.c.profile_id, m.c.entered_at).where(
            m.c.workspace_id == principal.workspace_id, m.c.segment_key == key)
            .order_by(m.c.entered_at, m.c.profile_id).limit(limit).offset(offset))).all()
    return {"items": [{"profile_id": r.profile_id, "entered_at": r.entered_at.isoformat()}
                      for r in rows], "limit": limit, "offset": offset}


@router.delete("/{key}", status_code=204)
async def delete_segment(request: Request, principal: AdminDep, key: str = Key) -> None:
    """Delete a segment; every member exits (segment_exited is emitted)."""
    rt = request.app.state.runtime
    async with rt.engine.begin() as conn:
        ids = await segment_admin.drop(conn, rt.settings, principal.workspace_id, key,
                                       datetime.now(UTC))
        await conn.execute(delete(segments).where(
            segments.c.workspace_id == principal.workspace_id, segments.c.key == key))
    await rt.relay.publish(ids)
