"""The KPI system: `GET /v1/kpis` (read from rollups), rebuild of the event-based rollups."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field

from services.profile import kpis_read, kpis_rebuild
from services.profile import repository as repo
from services.profile.domain.kpis import local_day
from services.profile.settings import ProfileSettings
from shared.contracts.send import Channel
from shared.http.auth import AdminDep
from shared.http.contracts import problems
from shared.http.deps import RuntimeDep
from shared.http.problems import Problem

router = APIRouter(prefix="/v1/kpis", tags=["kpis"])
MAX_DAYS = 3 * 366  # the longest window one request may ask for
PARAMS = {"from", "to", "interval", "channel", "journey", "broadcast", "template", "segment"}
Value = Annotated[str | None, Query(min_length=1, max_length=200)]
INTERVALS = ("day", "week", "month")


class KpiAnswer(BaseModel):
    window: dict[str, Any] = Field(description="from, to (inclusive), interval, timezone, "
                                               "filters, whole_intervals, distinct (always "
                                               "`exact`: every window is an OR of day "
                                               "bitmaps, no sketch)")
    totals: dict[str, Any] = Field(description="GROUP -> figures over the whole window")
    series: list[dict[str, Any]] = Field(description="per interval: start and GROUP -> figures")
    by: dict[str, Any] = Field(description="journey / broadcast / template / channel -> KEY -> "
                                           "communication and attribution")
    warnings: list[str] = Field(default_factory=list)


class RebuildRun(BaseModel):
    id: str
    status: str = Field(description="running | done | failed")
    events_done: int
    events_total: int
    started_at: str
    finished_at: str | None
    error: str | None


def _bad(field: str, message: str) -> Problem:
    return Problem(400, "Invalid request", f"{field}: {message}",
                   errors=[{"field": field, "message": message}])


@router.get("", response_model=KpiAnswer)
async def get_kpis(request: Request, rt: RuntimeDep, principal: AdminDep,
                   from_: Annotated[date | None, Query(alias="from")] = None,
                   to: Annotated[date | None, Query()] = None,
                   interval: Annotated[str, Query(json_schema_extra={
                       "enum": list(INTERVALS)})] = "day",
                   channel: Annotated[str | None, Query(json_schema_extra={
                       "enum": [c.value for c in Channel]})] = None,
                   journey: Value = None, broadcast: Value = None,
                   template: Value = None, segment: Value = None) -> dict[str, Any]:
    """The KPI groups of a window (workspace time zone), totals, series per interval and
    breakdowns by journey, broadcast, template and channel; see docs/metrics.md."""
    if interval not in INTERVALS:
        raise _bad("interval", "one of day, week, month")
    if channel is not None and channel not in {c.value for c in Channel}:
        raise _bad("channel", "unknown channel")
    unknown = sorted(set(request.query_params) - PARAMS)
    if unknown:
        raise _bad(unknown[0], "unknown parameter")
    chosen = [(k, v) for k, v in (("channel", channel), ("journey", journey),
                                  ("broadcast", broadcast), ("template", template)) if v]
    if len(chosen) > 1:
        raise _bad(chosen[1][0], f"combine at most one of channel, journey, broadcast, "
                                 f"template (with {chosen[0][0]})")
    ws = principal.workspace_id
    async with rt.engine.connect() as conn:
        conv = (await repo.conventions_for(conn, [ws]))[ws]
        last = to or local_day(datetime.now(UTC), conv.timezone)
        first = from_ or last - timedelta(days=29)
        if first > last:
            raise _bad("from", "after `to`")
        if (last - first).days + 1 > MAX_DAYS:
            raise _bad("from", f"the window is longer than {MAX_DAYS} days")
        if segment is not None:
            ok = await repo.fetch(conn, "SELECT 1 FROM profile.segments WHERE workspace_id = $1 "
                                  "AND key = $2 AND reporting", ws, segment)
            if not ok:
                raise _bad("segment", "no segment with this key marked `reporting: true`")
        dim, key = chosen[0] if chosen else ("", "")
        w = kpis_read.Window(ws, first, last, interval, dim, key, segment or "")
    out, crm = await kpis_read.answer_and_crm(rt.engine, w, conv)
    out["warnings"] = []
    uplift, warning = await _uplift(request, sorted(out["by"]["journey"]))
    # Journeys' figures under their keys (none when journey is unavailable: a warning says
    # so), and `crm`: treated customers against the global control group, from profile's
    # own rollups. A journey keyed `crm` keeps its figures in `by.journey.crm.uplift`.
    for key, figures in (uplift or {}).items():
        out["by"]["journey"].setdefault(key, {})["uplift"] = figures
    out["totals"]["uplift"] = (uplift or {}) | {"crm": crm}
    if warning:
        out["warnings"].append(warning)
    return out


async def _uplift(request: Request, keys: list[str]) -> tuple[dict[str, Any] | None, str | None]:
    """Per journey with sends in the window: journey's treated-vs-holdout figures, asked over
    HTTP with the caller's admin key, in one call for every journey (`include=goal`).
    Journey down or slow: None and a warning."""
    if not keys:
        return {}, None
    settings = ProfileSettings.from_base(request.app.state.runtime.settings)
    auth = {"Authorization": request.headers.get("authorization", "")}
    try:
        async with httpx.AsyncClient(base_url=settings.journey_url,
                                     timeout=settings.kpis_uplift_timeout_s) as client:
            r = await asyncio.wait_for(client.get(
                "/v1/journeys", params={"include": "goal"}, headers=auth),
                settings.kpis_uplift_timeout_s)
    except (httpx.HTTPError, TimeoutError) as exc:
        return None, f"uplift: journey unavailable ({type(exc).__name__})"
    if r.status_code != 200:
        return None, f"uplift: journey answered {r.status_code}"
    goals = {item["key"]: item.get("goal") or {} for item in r.json().get("items", [])}
    wanted = set(keys)
    return {key: {k: goal.get(k) for k in ("treated", "holdout", "uplift", "ci95",
                                           "revenue_per_customer", "holdout_size")}
            for key, goal in goals.items() if key in wanted}, None


@router.post("/rebuild", status_code=202, response_model=RebuildRun)
async def start_rebuild(rt: RuntimeDep, principal: AdminDep) -> dict[str, Any]:
    """Recompute the event-based rollups from the stored history; follow it with GET."""
    run: dict[str, Any] = await kpis_rebuild.start(rt.engine, principal.workspace_id)
    return run


@router.get("/rebuild/{run_id}", response_model=RebuildRun, responses=problems(404))
async def get_rebuild(rt: RuntimeDep, principal: AdminDep,
                      run_id: str = Path(max_length=36)) -> dict[str, Any]:
    """Progress of one rebuild."""
    run: dict[str, Any] | None = await kpis_rebuild.progress(rt.engine, principal.workspace_id,
                                                              run_id)
    if run is None:
        raise Problem(404, "Not found", f"no rebuild '{run_id}'")
    return run
