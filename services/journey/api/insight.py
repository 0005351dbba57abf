"""Numbers per journey and stage, and one customer's journeys and "why?" trace."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from sqlalchemy import Float, and_, cast, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.journey.domain.uplift import conversion, uplift
from services.journey.tables import decisions, instances, journeys
from shared.http.auth import AdminDep
from shared.http.paging import Limit
from shared.http.problems import Problem

router = APIRouter(tags=["journeys"])
ProfileId = Annotated[str, Path(max_length=36)]


async def _known(conn: AsyncConnection, ws: str, key: str) -> None:
    if (await conn.execute(select(journeys.c.key).where(
            journeys.c.workspace_id == ws, journeys.c.key == key))).first() is None:
        raise Problem(404, "Not found", f"no journey '{key}'")


@router.get("/v1/journeys/{key}/stats")
async def journey_stats(key: str, request: Request, principal: AdminDep,
                        version: Annotated[int | None, Query(ge=1)] = None) -> dict[str, Any]:
    """Customers per stage and step, entries, transitions, time in stage, sends per step,
    goal conversion of treated and holdout customers, and the uplift with a 95 % CI."""
    ws = principal.workspace_id
    i, d = instances.c, decisions.c
    scope_i = and_(i.workspace_id == ws, i.journey_key == key,
                   *([i.version == version] if version else []))
    scope_d = and_(d.workspace_id == ws, d.journey_key == key,
                   *([d.version == version] if version else []))
    async with request.app.state.runtime.engine.connect() as conn:
        await _known(conn, ws, key)
        by_stage = (await conn.execute(select(i.stage, i.status, func.count().label("n"))
                                       .where(scope_i).group_by(i.stage, i.status))).all()
        by_step = (await conn.execute(select(i.stage, i.step, func.count().label("n")).where(
            scope_i, i.status == "active").group_by(i.stage, i.step))).all()
        exits = (await conn.execute(select(i.exit_reason, func.count().label("n")).where(
            scope_i, i.status == "exited").group_by(i.exit_reason))).all()
        goals = (await conn.execute(select(
            i.holdout, func.count().label("n"),
            func.count(i.goal_at).label("converted")).where(scope_i).group_by(i.holdout))).all()
        moves = (await conn.execute(select(
            d.detail["from"].astext.label("source"), d.stage, func.count().label("n")).where(
            scope_d, d.kind == "stage", d.outcome == "entered",
            d.detail["from"].astext.is_not(None)).group_by("source", d.stage))).all()
        seconds = cast(d.detail["seconds"].astext, Float)
        stays = (await conn.execute(select(
            d.stage, func.count().label("n"), func.avg(seconds).label("mean"),
            func.percentile_cont(0.5).within_group(seconds).label("p50"),
            func.percentile_cont(0.9).within_group(seconds).label("p90")).where(
            scope_d, d.kind == "stage", d.outcome == "left").group_by(d.stage))).all()
        step_sends = (await conn.execute(select(d.stage, d.step, d.outcome,
                                                func.count().label("n")).where(
            scope_d, d.kind == "send").group_by(d.stage, d.step, d.outcome))).all()
    stages: dict[str, dict[str, int]] = {}
    for row in by_stage:
        stages.setdefault(row.stage, {})[row.status] = row.n
    steps: dict[str, dict[str, int]] = {}
    for row in by_step:
        steps.setdefault(row.stage, {})[row.step or "(idle)"] = row.n
    sends: dict[str, dict[str, dict[str, int]]] = {}
    for row in step_sends:
        sends.setdefault(row.stage, {}).setdefault(row.step, {})[row.outcome] = row.n
    group = {bool(r.holdout): (int(r.converted), int(r.n)) for r in goals}
    treated, holdout = group.get(False, (0, 0)), group.get(True, (0, 0))
    return {
        "key": key, "version": version,
        "entries": sum(r.n for r in by_stage),
        "stages": stages,
        "active_by_step": steps,
        "exits": {r.exit_reason or "": r.n for r in exits},
        "transitions": [{"from": r.source, "to": r.stage, "count": r.n} for r in moves],
        "time_in_stage": {r.stage: {"count": r.n, "mean_s": _round(r.mean),
                                    "p50_s": _round(r.p50), "p90_s": _round(r.p90)}
                          for r in stays},
        "sends": sends,
        "goal": {
            "treated": {"customers": treated[1], "converted": treated[0],
                        "conversion": conversion(*treated)},
            "holdout": {"customers": holdout[1], "converted": holdout[0],
                        "conversion": conversion(*holdout)},
        } | uplift(treated, holdout),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def _instance(row: Any) -> dict[str, Any]:
    return {"id": row.id, "journey": row.journey_key, "version": row.version,
            "instance_key": row.instance_key, "stage": row.stage, "step": row.step,
            "status": row.status, "holdout": row.holdout, "entered_at": row.entered_at,
            "stage_entered_at": row.stage_entered_at, "waiting_until": row.wake_at,
            "ended_at": row.ended_at, "exit_reason": row.exit_reason, "goal_at": row.goal_at}


@router.get("/v1/profiles/{profile_id}/journeys")
async def profile_journeys(profile_id: ProfileId, request: Request, principal: AdminDep,
                           limit: Limit = 100) -> dict[str, Any]:
    """Every journey instance of one customer, newest first: where they stand and why."""
    i = instances.c
    async with request.app.state.runtime.engine.connect() as conn:
        rows = (await conn.execute(select(instances).where(
            i.workspace_id == principal.workspace_id, i.profile_id == profile_id)
            .order_by(i.entered_at.desc()).limit(limit))).all()
    return {"profile_id": profile_id, "items": [_instance(r) for r in rows]}


@router.get("/v1/profiles/{profile_id}/journeys/{key}/trace")
async def profile_trace(profile_id: ProfileId, key: str, request: Request, principal: AdminDep,
                        limit: Annotated[int, Query(ge=1, le=5000)] = 1000) -> dict[str, Any]:
    """Why did (or didn't) this customer get that message: every decision the engine made
    for them in this journey, oldest first (entry rules with the values they saw, branches,
    sends held, deferred or skipped and by which rule, exits)."""
    i, d = instances.c, decisions.c
    ws = principal.workspace_id
    async with request.app.state.runtime.engine.connect() as conn:
        await _known(conn, ws, key)
        runs = (await conn.execute(select(instances).where(
            i.workspace_id == ws, i.profile_id == profile_id, i.journey_key == key)
            .order_by(i.entered_at))).all()
        rows = (await conn.execute(select(decisions).where(
            d.workspace_id == ws, d.profile_id == profile_id, d.journey_key == key)
            .order_by(d.id).limit(limit))).all()
    return {"profile_id": profile_id, "journey": key,
            "instances": [_instance(r) for r in runs],
            "trace": [{"at": r.at, "version": r.version, "instance_id": r.instance_id,
                       "instance_key": r.instance_key, "stage": r.stage, "step": r.step,
                       "kind": r.kind, "outcome": r.outcome, "reason": r.reason,
                       "detail": r.detail} for r in rows]}


