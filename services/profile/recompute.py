"""The scheduled pass: RFM quintiles, lifecycle decay, BG/NBD + Gamma-Gamma predictions, and
time-based segments, per workspace. Emits rfm_changed / lifecycle_changed / segment moves."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

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
from shared.db import OutboxRelay, OutboxRow
from shared.settings import Settings

log = logging.getLogger(__name__)


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
    rows = (await conn.execute(select(
        p.c.id, p.c.order_count, p.c.gross_revenue, p.c.refunded, p.c.first_order_at,
        p.c.last_order_at, p.c.reactivated_at, p.c.lifecycle_stage, p.c.rfm)
        .where(p.c.workspace_id == ws, p.c.order_count > 0))).all()
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
    changes: list[tuple[str, Change]] = []
    updates: list[dict[str, Any]] = []
    for i, r in enumerate(rows):
        s = scores[r.id]
        new_rfm = {"r": s.r, "f": s.f, "m": s.m, "segment": s.segment}
        old_segment = (r.rfm or {}).get("segment")
        if old_segment != s.segment:
            changes.append((r.id, Change("rfm_changed", {"from": old_segment, "to": s.segment})))
        predictions: dict[str, Any] = {}
        if bg is not None:
            alive = clv.p_alive(bg, x[i], tx[i], T[i])
            expected = clv.expected_orders(bg, x[i], tx[i], T[i], conv.ltv_horizon_days)
            predictions = {"p_alive": round(alive, 4), "churn_risk": round(1 - alive, 4),
                           "expected_orders": round(expected, 3)}
            if gg is not None:
                value = clv.expected_order_value(gg, r.order_count, means[i])
                predictions["expected_order_value"] = round(value, 2)
                predictions["predicted_ltv"] = round(expected * value, 2)
        stage = lifecycle_stage(order_count=r.order_count, first_order_at=r.first_order_at,
                                last_order_at=r.last_order_at, reactivated_at=r.reactivated_at,
                                now=now, conv=conv)
        updates.append({"pid": r.id, "rfm": new_rfm, "rfm_segment": s.segment,
                        "predictions": predictions})
        if stage != r.lifecycle_stage:
            # Only if no order arrived since we read the row (the consumer owns that column too).
            done = await conn.execute(update(p).where(
                p.c.id == r.id, p.c.last_order_at == r.last_order_at,
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
            try:
                for ws in await workspaces(self.engine):
                    await recompute_workspace(self.engine, self.settings, ws, datetime.now(UTC),
                                              self.relay)
            except Exception as exc:
                log.warning("profile recompute failed (%s); next pass in %.0f s",
                            type(exc).__name__, self.interval_s)
            try:
                await asyncio.wait_for(self._stopping.wait(), self.interval_s)
            except TimeoutError:
                pass
