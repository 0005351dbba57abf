"""Recompute a workspace's event-based KPI rollups from profile's stored history.

One transaction holds the workspace's KPI lock exclusively (the consumer takes it shared per
batch, see kpis_store.reporting_segments), empties the rollups and recomputes them from
`profile.events` set-based, one statement per rollup table per chunk of history in time
order (kpis_rebuild_sql); the run's progress is written on the side so GET can follow.
What the history cannot tell is documented in docs/metrics.md: facts count under the
segments the profiles are in now; erased people's events are gone; lifecycle moves (not
events) are kept as they were.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.profile import kpis_rebuild_sql as sql
from services.profile import repository as repo

log = logging.getLogger(__name__)
_TASKS: set[asyncio.Task[None]] = set()
_EMPTIED = ("kpi_bits", "kpi_firsts", "kpi_touches", "kpi_orders", "kpi_customer_days",
            "kpi_money")


async def start(engine: AsyncEngine, workspace_id: str) -> dict[str, Any]:
    run_id = str(uuid.uuid4())
    async with engine.begin() as conn:
        total = (await sql.fetch(conn, "SELECT count(*) FROM profile.events WHERE "
                                 "workspace_id = $1", workspace_id))[0][0]
        await repo.fetch(conn, "INSERT INTO profile.kpi_rebuilds (id, workspace_id, status, "
                         "events_total) VALUES ($1, $2, 'running', $3)", run_id, workspace_id,
                         total)
    task = asyncio.create_task(_run(engine, workspace_id, run_id))
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
    found = await progress(engine, workspace_id, run_id)
    assert found is not None
    return found


async def progress(engine: AsyncEngine, workspace_id: str, run_id: str
                   ) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        rows = await repo.fetch(conn, "SELECT * FROM profile.kpi_rebuilds WHERE id = $1 AND "
                                "workspace_id = $2", run_id, workspace_id)
    if not rows:
        return None
    r = rows[0]
    return {"id": r["id"], "status": r["status"], "events_done": r["events_done"],
            "events_total": r["events_total"], "started_at": r["started_at"].isoformat(),
            "finished_at": r["finished_at"].isoformat() if r["finished_at"] else None,
            "error": r["error"]}


async def _run(engine: AsyncEngine, ws: str, run_id: str) -> None:
    try:
        await rebuild(engine, ws, lambda n: _mark(engine, run_id, "running", n))
        await _mark(engine, run_id, "done", None)
    except Exception as exc:  # reported on the run; the rollups are left as they were
        log.warning("kpi rebuild of a workspace failed (%s)", type(exc).__name__)
        await _mark(engine, run_id, "failed", None, type(exc).__name__)


async def _mark(engine: AsyncEngine, run_id: str, status: str, done: int | None,
                error: str | None = None) -> None:
    async with engine.begin() as conn:
        await repo.fetch(
            conn, "UPDATE profile.kpi_rebuilds SET status = $2::text, events_done = "
            "coalesce($3::bigint, events_done), error = $4::text, finished_at = CASE WHEN "
            "$2::text = 'running' THEN NULL ELSE now() END WHERE id = $1", run_id, status,
            done, error)


async def rebuild(engine: AsyncEngine, ws: str, report: Any) -> int:
    """Recompute the workspace's event-based rollups from its history, set-based
    (kpis_rebuild_sql), in time-ordered chunks; `report(events done)` after each. Returns
    the events read."""
    async with engine.begin() as conn:
        await repo.fetch(conn, "SELECT pg_advisory_xact_lock(hashtext('profile-kpis:' || $1))",
                         ws)
        # Sorts and hashes of millions of rows: in memory rather than in temporary files;
        # no JIT (it costs more to compile these statements than it saves).
        await repo.fetch(conn, "SET LOCAL work_mem = '256MB'")
        await repo.fetch(conn, "SET LOCAL jit = off")
        # Millions of rows: past the engine's 30 s statement timeout (sql.fetch's own).
        for table in _EMPTIED:
            await sql.fetch(conn, f"DELETE FROM profile.{table} WHERE "  # noqa: S608
                            "workspace_id = $1", ws)
        await sql.fetch(conn, "DELETE FROM profile.kpi_counts WHERE workspace_id = $1 AND "
                        "metric NOT LIKE 'move:%'", ws)
        conv = (await repo.conventions_for(conn, [ws]))[ws]
        total = (await sql.fetch(conn, "SELECT count(*) FROM profile.events WHERE "
                                 "workspace_id = $1", ws))[0][0]
        chunks = await sql.extract(conn, ws, conv)
        done = total - sum(n for _, _, n in chunks)  # read, and nothing to count
        if done:
            await report(done)
        for lo, hi, n in chunks:
            await sql.chunk(conn, ws, lo, hi)
            done += n
            await report(done)
        await sql.finish(conn, ws, conv)
        return int(total)
