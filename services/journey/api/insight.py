"""Numbers per journey and stage, and one customer's journeys and "why?" trace."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from sqlalchemy import Float, and_, cast, false, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.journey.api.schemas import JourneyStats, ProfileJourneys, ProfileTrace
from services.journey.domain.uplift import conversion, uplift, welch
from services.journey.tables import decisions, instances, journeys, snapshots
from shared.http.auth import AdminDep
from shared.http.contracts import answers
from shared.http.deps import EngineDep
from shared.http.paging import Limit
from shared.http.problems import Problem

router = APIRouter(tags=["journeys"])
ProfileId = Annotated[str, Path(max_length=36)]


async def _known(conn: AsyncConnection, ws: str, key: str) -> None:
    if (await conn.execute(select(journeys.c.key).where(
            journeys.c.workspace_id == ws, journeys.c.key == key))).first() is None:
        raise Problem(404, "Not found", f"no journey '{key}'")


_STATS_DESCRIPTION = """
Two units are counted, and each field says which:
- **instances**: runs of the journey. With `instance_key` one customer can run it several
  times (two orders, two review flows), so instances can outnumber customers.
- **customers**: distinct profiles.

Fields:
- `entries`: instances started; `customers`: distinct customers who entered.
- `stages`: instances per stage and status; `stage_customers`: distinct customers per
  stage and status (a customer with two instances in a stage counts once there).
- `active_by_step`: active instances per stage and step (`(idle)`: flow finished, waiting
  for a later stage); `active_customers_by_step`: the same in distinct customers.
- `exits`: instances per exit reason. `transitions`: stage moves (instances), and
  `time_in_stage`: completed stays, from the decision trace.
- `sends`: send decisions per stage, step and outcome.
- `goal.treated` / `goal.holdout`: `customers` (distinct), `converted` (customers with at
  least one instance that reached the goal), `conversion` = converted / customers, and
  `instances`, `converted_instances`. Holdout is drawn per customer, so `uplift` and
  `ci95` compare customers. `ci95` is Newcombe's hybrid score interval (1998, method 10;
  `ci_method`), informative for small holdouts; `holdout_size` is the holdout's customers.
  Global control-group members are in neither arm (`control_group_excluded` counts them).
- `goal.*.revenue` / `revenue_per_customer`: the arm's goal values (the goal event's first
  `revenue_properties` number, profile's convention; else 0) and their mean per customer;
  `goal.revenue_per_customer`: the difference treated - holdout with Welch's 95 % interval
  (`df`). Read from the goal decisions, so they cover the trace retention.

Transitions, times in stage and sends come from decisions, which are kept for the trace
retention (`TOUCHPOINT_JOURNEY_TRACE_RETENTION_DAYS`, default 90 days after an instance
ended); the other numbers come from instances, which are kept.
"""


@router.get("/v1/journeys/{key}/stats", description=_STATS_DESCRIPTION,
            responses=answers(JourneyStats, 404))
async def journey_stats(key: str, engine: EngineDep, principal: AdminDep,
                        version: Annotated[int | None, Query(ge=1)] = None) -> dict[str, Any]:
    """Instances and distinct customers per stage and step, entries, transitions, time in
    stage, sends per step, goal conversion of treated and holdout customers, and the uplift
    with a 95 % CI."""
    ws = principal.workspace_id
    i, d = instances.c, decisions.c
    scope_i = and_(i.workspace_id == ws, i.journey_key == key,
                   *([i.version == version] if version else []))
    scope_d = and_(d.workspace_id == ws, d.journey_key == key,
                   *([d.version == version] if version else []))
    n, people = func.count().label("n"), func.count(i.profile_id.distinct()).label("people")
    async with engine.connect() as conn:
        await _known(conn, ws, key)
        customers = (await conn.execute(select(func.count(i.profile_id.distinct()))
                                        .where(scope_i))).scalar_one()
        by_stage = (await conn.execute(select(i.stage, i.status, n, people)
                                       .where(scope_i).group_by(i.stage, i.status))).all()
        by_step = (await conn.execute(select(i.stage, i.step, n, people).where(
            scope_i, i.status == "active").group_by(i.stage, i.step))).all()
        exits = (await conn.execute(select(i.exit_reason, func.count().label("n")).where(
            scope_i, i.status == "exited").group_by(i.exit_reason))).all()
        goal = (await goal_figures(conn, ws, [key], version))[key]
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
    stage_customers: dict[str, dict[str, int]] = {}
    for row in by_stage:
        stages.setdefault(row.stage, {})[row.status] = row.n
        stage_customers.setdefault(row.stage, {})[row.status] = row.people
    steps: dict[str, dict[str, int]] = {}
    step_customers: dict[str, dict[str, int]] = {}
    for row in by_step:
        steps.setdefault(row.stage, {})[row.step or "(idle)"] = row.n
        step_customers.setdefault(row.stage, {})[row.step or "(idle)"] = row.people
    sends: dict[str, dict[str, dict[str, int]]] = {}
    for row in step_sends:
        sends.setdefault(row.stage, {}).setdefault(row.step, {})[row.outcome] = row.n
    return {
        "key": key, "version": version,
        "entries": sum(r.n for r in by_stage),
        "customers": customers,
        "stages": stages,
        "stage_customers": stage_customers,
        "active_by_step": steps,
        "active_customers_by_step": step_customers,
        "exits": {r.exit_reason or "": r.n for r in exits},
        "transitions": [{"from": r.source, "to": r.stage, "count": r.n} for r in moves],
        "time_in_stage": {r.stage: {"count": r.n, "mean_s": _round(r.mean),
                                    "p50_s": _round(r.p50), "p90_s": _round(r.p90)}
                          for r in stays},
        "sends": sends,
        "goal": goal,
    }


async def goal_figures(conn: AsyncConnection, ws: str, keys: list[str],
                       version: int | None = None) -> dict[str, dict[str, Any]]:
    """The `goal` block of the stats of each journey in `keys` (a version of one journey
    with `version`), in one pass over the instances whatever the number of journeys: what the
    list's `include=goal` and profile's KPI uplift read without one call per journey."""
    i, d = instances.c, decisions.c
    scope_i = and_(i.workspace_id == ws, i.journey_key.in_(keys),
                   *([i.version == version] if version else []))
    scope_d = and_(d.workspace_id == ws, d.journey_key.in_(keys),
                   *([d.version == version] if version else []))
    # Global control-group members are in neither arm: they get no marketing message
    # whichever arm they drew, so they would dilute the treated arm's effect. Most
    # workspaces have none (one probe of the partial index snapshots_control); else they are
    # a small set, excluded as one hashed list rather than a lookup per instance.
    s = snapshots.c
    members = select(s.profile_id).where(s.workspace_id == ws, s.control)
    any_control = (await conn.execute(members.limit(1))).first() is not None
    control: Any = i.profile_id.in_(members) if any_control else false()
    in_control: dict[str, int] = {} if not any_control else dict((await conn.execute(
        select(i.journey_key, func.count(i.profile_id.distinct())).where(scope_i, control)
        .group_by(i.journey_key))).tuples().all())
    goals = (await conn.execute(_arms(scope_i, scope_d, control))).all()
    arms = {(r.journey_key, bool(r.holdout)): r for r in goals}
    out = {}
    for key in keys:
        treated = _arm(arms.get((key, False))) | _money(arms.get((key, False)))
        holdout = _arm(arms.get((key, True))) | _money(arms.get((key, True)))
        money = welch(_sample(arms.get((key, False))), _sample(arms.get((key, True))))
        out[key] = {"treated": treated, "holdout": holdout,
                    "control_group_excluded": int(in_control.get(key, 0))} | uplift(
            (treated["converted"], treated["customers"]),
            (holdout["converted"], holdout["customers"])) | {
            "revenue_per_customer": {"difference": money["difference"], "ci95": money["ci95"],
                                     "ci_method": "welch", "df": money["df"]}}
    return out


def _arms(scope_i: Any, scope_d: Any, control: Any) -> Any:
    """Per journey and arm, in one pass over the instances grouped by customer: instances,
    customers, converted instances and customers, and the total, mean and sample variance
    of each customer's goal revenue (the `revenue` of their goal decisions in that journey;
    0 for those without). Holdout is drawn per customer, so a customer is in one arm."""
    i, d = instances.c, decisions.c
    people = (select(i.journey_key, i.profile_id, func.bool_or(i.holdout).label("holdout"),
                     func.count().label("n"), func.count(i.goal_at).label("converted"))
              .where(scope_i, ~control).group_by(i.journey_key, i.profile_id).subquery())
    worth = (select(d.journey_key, d.profile_id,
                    func.sum(cast(d.detail["revenue"].astext, Float)).label("revenue"))
             .where(scope_d, d.kind == "goal", d.outcome == "reached",
                    d.detail.has_key("revenue"))
             .group_by(d.journey_key, d.profile_id).subquery())
    value = func.coalesce(worth.c.revenue, 0.0)
    p = people.c
    return (select(p.journey_key, p.holdout, func.sum(p.n).label("n"),
                   func.count().label("people"), func.sum(p.converted).label("converted"),
                   func.count().filter(p.converted > 0).label("people_converted"),
                   func.sum(value).label("total"), func.avg(value).label("mean"),
                   func.var_samp(value).label("var"))
            .select_from(people.outerjoin(worth, and_(
                worth.c.profile_id == p.profile_id, worth.c.journey_key == p.journey_key)))
            .group_by(p.journey_key, p.holdout))


def _money(row: Any) -> dict[str, Any]:
    return {"revenue": round(float(row.total), 2) if row else 0.0,
            "revenue_per_customer": round(float(row.mean), 6) if row else None}


def _sample(row: Any) -> tuple[float, float, int]:
    if row is None:
        return 0.0, 0.0, 0
    return float(row.mean), float(row.var or 0.0), int(row.people)


def _arm(row: Any) -> dict[str, Any]:
    """One goal group. Conversion is per customer (holdout is drawn per customer, so
    customers are the independent units the uplift compares); instances besides."""
    customers, converted = (int(row.people), int(row.people_converted)) if row else (0, 0)
    return {"customers": customers, "converted": converted,
            "conversion": conversion(converted, customers),
            "instances": int(row.n) if row else 0,
            "converted_instances": int(row.converted) if row else 0}


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def _instance(row: Any) -> dict[str, Any]:
    return {"id": row.id, "journey": row.journey_key, "version": row.version,
            "instance_key": row.instance_key, "stage": row.stage, "step": row.step,
            "status": row.status, "holdout": row.holdout, "entered_at": row.entered_at,
            "stage_entered_at": row.stage_entered_at, "waiting_until": row.wake_at,
            "ended_at": row.ended_at, "exit_reason": row.exit_reason, "goal_at": row.goal_at}


@router.get("/v1/profiles/{profile_id}/journeys", responses=answers(ProfileJourneys))
async def profile_journeys(profile_id: ProfileId, engine: EngineDep, principal: AdminDep,
                           limit: Limit = 100) -> dict[str, Any]:
    """Every journey instance of one customer, newest first: where they stand and why."""
    i = instances.c
    async with engine.connect() as conn:
        rows = (await conn.execute(select(instances).where(
            i.workspace_id == principal.workspace_id, i.profile_id == profile_id)
            .order_by(i.entered_at.desc()).limit(limit))).all()
    return {"profile_id": profile_id, "items": [_instance(r) for r in rows]}


@router.get("/v1/profiles/{profile_id}/journeys/{key}/trace",
            responses=answers(ProfileTrace, 404))
async def profile_trace(profile_id: ProfileId, key: str, engine: EngineDep, principal: AdminDep,
                        limit: Annotated[int, Query(ge=1, le=5000)] = 1000) -> dict[str, Any]:
    """Why did (or didn't) this customer get that message: every decision the engine made
    for them in this journey, oldest first (entry rules with the values they saw, branches,
    sends held, deferred or skipped and by which rule, exits)."""
    i, d = instances.c, decisions.c
    ws = principal.workspace_id
    async with engine.connect() as conn:
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


