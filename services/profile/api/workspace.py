"""Workspace-level profile settings: metric conventions, model fit, recompute on demand."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from services.profile import recompute
from services.profile.api.schemas import ConventionsOut, ProfileSettingsOut, RecomputeOut
from services.profile.domain.conventions import Conventions
from services.profile.tables import workspace_settings
from shared.http.auth import AdminDep
from shared.http.contracts import answers
from shared.http.deps import EngineDep, RuntimeDep

router = APIRouter(prefix="/v1/profile-settings", tags=["profile settings"])
CONVENTIONS = {"order_events": ["Order Completed"], "refund_events": ["Order Refunded"],
               "revenue_properties": ["revenue", "total"]}
EXAMPLES = {"defaults": {"value": CONVENTIONS}}


@router.get("", responses=answers(ProfileSettingsOut))
async def get_profile_settings(engine: EngineDep, principal: AdminDep) -> dict[str, Any]:
    """The key's workspace, its conventions (which events are orders, refunds, surveys),
    last model fit and recompute."""
    async with engine.connect() as conn:
        row = (await conn.execute(select(workspace_settings).where(
            workspace_settings.c.workspace_id == principal.workspace_id))).first()
    conv = Conventions.model_validate(row.conventions) if row else Conventions()
    return {"workspace_id": principal.workspace_id,
            "conventions": conv.model_dump(mode="json"), "model": row.model if row else {},
            "recomputed_at": row.recomputed_at.isoformat() if row and row.recomputed_at
            else None}


@router.put("/conventions", responses=answers(ConventionsOut))
async def put_conventions(body: Annotated[Conventions, Body(openapi_examples=EXAMPLES)],
                          engine: EngineDep, principal: AdminDep) -> dict[str, Any]:
    """Replace the conventions; they apply to events processed from now on."""
    conventions = body.model_dump(mode="json")
    async with engine.begin() as conn:
        await conn.execute(insert(workspace_settings).values(
            workspace_id=principal.workspace_id, conventions=conventions).on_conflict_do_update(
            index_elements=["workspace_id"], set_={"conventions": conventions,
                                                   "updated_at": func.now()}))
    return {"conventions": conventions}


@router.post("/recompute", responses=answers(RecomputeOut))
async def recompute_now(rt: RuntimeDep, principal: AdminDep) -> dict[str, Any]:
    """Run the scheduled pass now: RFM, lifecycle, churn/LTV fit, time-based segments."""
    return await recompute.recompute_workspace(rt.engine, rt.settings, principal.workspace_id,
                                               datetime.now(UTC), rt.relay)
