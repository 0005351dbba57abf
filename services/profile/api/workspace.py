"""Workspace-level profile settings: metric conventions, model fit, recompute on demand."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from services.profile import recompute
from services.profile.domain.conventions import Conventions
from services.profile.tables import workspace_settings
from shared.http.auth import AdminDep

router = APIRouter(prefix="/v1/profile-settings", tags=["profile settings"])


@router.get("")
async def get_profile_settings(request: Request, principal: AdminDep) -> dict[str, Any]:
    """Conventions (which events are orders, refunds, surveys), last model fit and recompute."""
    async with request.app.state.runtime.engine.connect() as conn:
        row = (await conn.execute(select(workspace_settings).where(
            workspace_settings.c.workspace_id == principal.workspace_id))).first()
    conv = Conventions.model_validate(row.conventions) if row else Conventions()
    return {"conventions": conv.model_dump(mode="json"), "model": row.model if row else {},
            "recomputed_at": row.recomputed_at.isoformat() if row and row.recomputed_at
            else None}


@router.put("/conventions")
async def put_conventions(body: Conventions, request: Request,
                          principal: AdminDep) -> dict[str, Any]:
    """Replace the conventions; they apply to events processed from now on."""
    conventions = body.model_dump(mode="json")
    async with request.app.state.runtime.engine.begin() as conn:
        await conn.execute(insert(workspace_settings).values(
            workspace_id=principal.workspace_id, conventions=conventions).on_conflict_do_update(
            index_elements=["workspace_id"], set_={"conventions": conventions,
                                                   "updated_at": func.now()}))
    return {"conventions": conventions}


@router.post("/recompute")
async def recompute_now(request: Request, principal: AdminDep) -> dict[str, Any]:
    """Run the scheduled pass now: RFM, lifecycle, churn/LTV fit, time-based segments."""
    rt = request.app.state.runtime
    return await recompute.recompute_workspace(rt.engine, rt.settings, principal.workspace_id,
                                               datetime.now(UTC), rt.relay)
