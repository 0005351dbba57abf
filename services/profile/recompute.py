"""The scheduled pass: RFM quintiles, lifecycle decay, BG/NBD + Gamma-Gamma predictions, and
time-based segments, per workspace. Emits rfm_changed / lifecycle_changed / segment moves."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from prometheus_client import Counter
from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.profile import kpis_state, segment_admin, segment_store
from services.profile import repository as repo
from services.profile.domain import clv, rfm
from services.profile.domain.conventions import Conventions
from services.profile.domain.lifecycle import DAY, lifecycle_stage
from services.profile.domain.segments import is_time_based
from services.profile.domain.state import Change
from services.profile.tables import profiles, workspace_settings
from shared.clock import pause
from shared.contracts.storable import finite_time
from shared.db import OutboxRelay, OutboxRow
from shared.settings import Settings

log = logging.getLogger(__name__)
RECOMPUTE_FAILURES = Counter(
    "touchpoint_profile_recompute_failures_total",
    "Workspaces or profiles a scheduled recompute pass skipped after an error", ["scope"])


async def recompute_workspace(engine: AsyncEngine, settings: Settings, workspace_id: str,
                              now: datetime, relay: OutboxRelay | None) -> dict[str, Any]:
    """One full pass for one workspace; a replica that finds another doing it skips."""
    async with engine.begin() as conn:
        got = (await conn.execute(text("SELECT pg_try_advisory_xact_lock(hashtext(:k))"),
                                  {"k": f"profile-recompute:{workspace_id}"})).scalar_one()
        if not got:
            return {"workspace_id": workspace_id, "skipped": True}
        conv = (await repo.conventions_for(conn, [workspace_id]))[workspace_id]
        summary, changes = await _scores(conn, workspace_id, conv, now)
        ids = await _emit(conn, settings, workspace_id, changes, now, conv)
        rules = (await segment_store.rules_for(conn, [workspace_id]))[workspace_id]
        backfill = await segment_store.unfinished(conn, workspace_id)
    await _publish(relay, ids)
    chosen = {k: r for k, r in rules.items() if is_time_based(r) or k in backfill}
    after: str | None = ""
    while chosen and after is not None:
        async with engine.begin() as conn:
            ids, after = await segment_admin.reevaluate(conn, settings, workspace_id, chosen,
                                                        now, after=after)
        await _publish(relay, ids)
    if backfill:
        async with engine.begin() as conn:
            await segment_store.mark_computed(conn, workspace_id, backfill)
    async with engine.begin() as conn:  # today's state figures for the KPIs
        await kpis_state.take(conn, workspace_id, conv, now)
    return {"workspace_id": workspace_id, **summary, "segments_evaluated": len(chosen)}


async def _scores(conn: AsyncConnection, ws: str, conv: Conventions,
                  now: datetime) -> tuple[dict[str, Any], list[tuple[str, Change]]]:
    p = profiles
    read = (await conn.execute(select(
        p.c.id, p.c.order_count, p.c.gross_revenue, p.c.refunded, p.c.first_order_at,
        p.c.last_order_at, p.c.reactivated_at, p.c.lifecycle_stage, p.c.rfm)
        .where(p.c.workspace_id == ws, p.c.order_count > 0))).all()
    rows = [r for r in (_usable(row, now) for row in read) if r is not None]
    customers = [rfm.Customer(r.id, (now - r.last_order_at).total_seconds() / DAY,
                              r.order_count, r.gross_revenue - r.refunded) for r in rows]
    scores = rfm.score_all(customers)
    x = [r.order_count - 1 for r in rows]
    tx = [(r.last_order_at - r.first_order_at).total_seconds() / DAY for r in rows]
    T = [max((now - r.first_order_at).total_seconds() / DAY, t) for r, t in zip(rows, tx,
                                                                                 strict=True)]
    means = [max(r.gross_revenue - r.refunded, 0.0) / r.order_count for r in rows]
    # Fitting is CPU work: keep it off the event loop so HTTP and consumers stay responsive.
    bg, gg = await asyncio.to_thread(lambda: (clv.fit_bgnbd(x, tx, T),
                                              clv.fit_gamma_gamma([n + 1 for n in x], means)))
    fit = _Fit(now, conv, scores, x, tx, T, means, bg, gg)
    changes: list[tuple[str, Change]] = []
    updates: list[dict[str, Any]] = []
    for i, r in enumerate(rows):
        try:
            update_row, rfm_change, stage = _rescore(r, i, fit)
        except Exception as exc:  # one profile's bad data never stops the pass
            _failed("profile", exc)
            continue
        updates.append(update_row)
        if rfm_change is not None:
            changes.append((r.id, rfm_change))
        if stage != r.lifecycle_stage:
            # Only if no order arrived since we read the row (the consumer owns that column too).
            done = await conn.execute(update(p).where(
                p.c.id == r.id, p.c.last_order_at == r.stored_last_order_at,
                p.c.order_count == r.order_count).values(lifecycle_stage=stage))
            if done.rowcount:
                changes.append((r.id, Change("lifecycle_changed",
                                             {"from": r.lifecycle_stage, "to": stage})))
    if updates:
        await conn.execute(update(p).where(p.c.id == bindparam("pid")).values(
            rfm=bindparam("rfm"), rfm_segment=bindparam("rfm_segment"),
            predictions=bindparam("predictions")), updates)
    model = {"bgnbd": asdict(bg) if bg else None, "gamma_gamma": asdict(gg) if gg else None,
             "customers": len(rows), "fitted_at": now.isoformat()}
    await conn.execute(insert(workspace_settings).values(
        workspace_id=ws, model=model, recomputed_at=now).on_conflict_do_update(
        index_elements=["workspace_id"], set_={"model": model, "recomputed_at": now,
                                               "updated_at": func.now()}))
    return {"customers": len(rows), "model": model}, changes


@dataclass(frozen=True)
class _Fit:
    """What the pass computed over the whole workspace, to score each profile with."""

    now: datetime
    conv: Conventions
    scores: dict[str, rfm.Score]
    x: list[int]
    tx: list[float]
    T: list[float]
    means: list[float]
    bg: clv.BgNbd | None
    gg: clv.GammaGamma | None


def _rescore(r: Any, i: int, fit: _Fit) -> tuple[dict[str, Any], Change | None, str | None]:
    """Profile `i`'s new scores (its update row), its RFM change if any, its lifecycle stage."""
    s = fit.scores[r.id]
    new_rfm = {"r": s.r, "f": s.f, "m": s.m, "segment": s.segment}
    old_segment = (r.rfm or {}).get("segment")
    predictions: dict[str, Any] = {}
    if fit.bg is not None:
        x, tx, T = fit.x[i], fit.tx[i], fit.T[i]
        alive = clv.p_alive(fit.bg, x, tx, T)
        expected = clv.expected_orders(fit.bg, x, tx, T, fit.conv.ltv_horizon_days)
        predictions = {"p_alive": round(alive, 4), "churn_risk": round(1 - alive, 4),
                       "expected_orders": round(expected, 3)}
        if fit.gg is not None:
            value = clv.expected_order_value(fit.gg, r.order_count, fit.means[i])
            predictions["expected_order_value"] = round(value, 2)
            predictions["predicted_ltv"] = round(expected * value, 2)
    stage = lifecycle_stage(order_count=r.order_count, first_order_at=r.first_order_at,
                            last_order_at=r.last_order_at, reactivated_at=r.reactivated_at,
                            now=fit.now, conv=fit.conv)
    change = (Change("rfm_changed", {"from": old_segment, "to": s.segment})
              if old_segment != s.segment else None)
    return ({"pid": r.id, "rfm": new_rfm, "rfm_segment": s.segment,
             "predictions": predictions}, change, stage)


def _usable(row: Any, now: datetime) -> SimpleNamespace | None:
    """The row with +-infinity times read as 1970/now; None (counted) if still unusable."""
    try:
        r = SimpleNamespace(**row._asdict(), stored_last_order_at=row.last_order_at)
        for name in ("first_order_at", "last_order_at", "reactivated_at"):
            setattr(r, name, finite_time(getattr(r, name), now))
        (now - r.last_order_at).total_seconds()
        (r.last_order_at - r.first_order_at).total_seconds()
    except Exception as exc:
        _failed("profile", exc)
        return None
    return r


def _failed(scope: str, exc: BaseException) -> None:
    RECOMPUTE_FAILURES.labels(scope).inc()
    log.warning("profile recompute skipped a %s after %s", scope, type(exc).__name__)


async def _emit(conn: AsyncConnection, settings: Settings, ws: str,
                changes: list[tuple[str, Change]], now: datetime,
                conv: Conventions) -> list[OutboxRow]:
    if not changes:
        return []
    pids = list({pid for pid, _ in changes})
    rows = (await conn.execute(select(profiles).where(profiles.c.id.in_(pids)))).mappings().all()
    states = {r["id"]: repo.state_from_row(r) for r in rows}
    members = {pid: sorted(keys) for pid, keys in (await repo.memberships(conn, pids)).items()}
    return await segment_admin.emit(conn, settings, ws, [c for c in changes if c[0] in states],
                                    now, members, states, conv)


async def _publish(relay: OutboxRelay | None, ids: list[OutboxRow]) -> None:
    if relay is not None:  # otherwise the sweeper publishes them
        await relay.publish(ids)


async def workspaces(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(profiles.c.workspace_id).distinct())).all()
    return [r.workspace_id for r in rows]


class RecomputeSchedule:
    """Every `interval_s`: recompute each workspace. Failures are logged and retried next time."""

    def __init__(self, engine: AsyncEngine, settings: Settings, relay: OutboxRelay | None,
                 interval_s: float) -> None:
        self.engine, self.settings, self.relay = engine, settings, relay
        self.interval_s = interval_s
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            await self.run_once()
            await pause(self._stopping, self.interval_s)

    async def run_once(self) -> None:
        """One pass over every workspace: one's failure is logged, counted and skipped."""
        try:
            found = await workspaces(self.engine)
        except Exception as exc:
            log.warning("profile recompute failed (%s); next pass in %.0f s",
                        type(exc).__name__, self.interval_s)
            return
        for ws in found:
            if self._stopping.is_set():
                return
            try:
                await recompute_workspace(self.engine, self.settings, ws, datetime.now(UTC),
                                          self.relay)
            except Exception as exc:
                _failed("workspace", exc)
