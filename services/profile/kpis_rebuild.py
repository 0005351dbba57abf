"""Recompute a workspace's event-based KPI rollups from profile's stored history.

One transaction holds the workspace's KPI lock exclusively (the consumer takes it shared per
batch, see kpis_store.reporting_segments), empties the rollups and replays `profile.events`
in time order, a page at a time; the run's progress is written on the side so GET can follow.
What the history cannot tell is documented in docs/metrics.md: facts count under the
segments the profiles are in now; erased people's events are gone; lifecycle moves (not
events) are kept as they were.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.profile import kpis_store
from services.profile import repository as repo
from services.profile.domain.kpi_facts import KpiFacts
from shared.contracts.delivery import DeliveryStatus

log = logging.getLogger(__name__)
PAGE = 20000  # events per page: the rollup statements are summed per page
_STATUS = {s.value: s for s in DeliveryStatus}
_TASKS: set[asyncio.Task[None]] = set()
_EMPTIED = ("kpi_people", "kpi_firsts", "kpi_touches", "kpi_orders", "kpi_customer_days")


async def start(engine: AsyncEngine, workspace_id: str) -> dict[str, Any]:
    run_id = str(uuid.uuid4())
    async with engine.begin() as conn:
        total = (await repo.fetch(conn, "SELECT count(*) FROM profile.events WHERE "
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
    """Replay the workspace's history into empty rollups; returns the events read."""
    async with engine.begin() as conn:
        await repo.fetch(conn, "SELECT pg_advisory_xact_lock(hashtext('profile-kpis:' || $1))",
                         ws)
        for table in _EMPTIED:
            await repo.fetch(conn, f"DELETE FROM profile.{table} WHERE "  # noqa: S608
                             "workspace_id = $1", ws)
        await repo.fetch(conn, "DELETE FROM profile.kpi_counts WHERE workspace_id = $1 AND "
                         "metric NOT LIKE 'move:%'", ws)
        convs = await repo.conventions_for(conn, [ws])
        conv = convs[ws]
        done, after = 0, (datetime(1970, 1, 1, tzinfo=UTC), "")
        while True:
            rows = await repo.fetch(
                conn, "SELECT event_id, profile_id, name, properties, timestamp FROM "
                "profile.events WHERE workspace_id = $1 AND (timestamp, event_id) > ($2, $3) "
                "ORDER BY timestamp, event_id LIMIT $4", ws, after[0], after[1], PAGE)
            if not rows:
                await _people(conn, ws, conv.timezone)
                return done
            facts = KpiFacts()
            for r in rows:
                props = r["properties"] or {}
                if r["event_id"].startswith("delivery:"):
                    _delivery(facts, ws, r, props)
                elif r["name"]:
                    facts.track(ws, r["profile_id"], r["event_id"], r["name"], props,
                                r["timestamp"], conv)
            members = await repo.memberships(conn, {r["profile_id"]: ws for r in rows})
            await kpis_store.write(conn, facts, convs, lambda pid: pid, {}, members, [],
                                   datetime.now(UTC), people=False)
            done += len(rows)
            after = (rows[-1]["timestamp"], rows[-1]["event_id"])
            await report(done)


_START = ("CASE i.interval WHEN 'day' THEN x.day WHEN 'week' THEN date_trunc('week', x.day)::date "
          "ELSE date_trunc('month', x.day)::date END")
_INTERVALS = "CROSS JOIN (VALUES ('day'), ('week'), ('month')) AS i(interval)"
_SEGMENTS = ("CROSS JOIN LATERAL (SELECT '' AS seg UNION ALL SELECT m.segment_key FROM "
             "profile.segment_members m JOIN profile.segments g ON g.workspace_id = "
             "m.workspace_id AND g.key = m.segment_key AND g.reporting WHERE "
             "m.workspace_id = $1 AND m.profile_id = x.profile_id) AS s")
_INSERT = ("INSERT INTO profile.kpi_people (workspace_id, figure, dim, key, segment, interval, "
           "start, profile_id, n) ")


async def _people(conn: Any, ws: str, tz: str) -> None:
    """The distinct-people sets and their counters, in bulk from what the replay left (the
    same rows the consumer writes one batch at a time): sends from the history, customers
    from the orders."""
    await repo.fetch(
        conn, _INSERT + f"SELECT $1, 'reached', d.dim, d.key, s.seg, i.interval, {_START}, "
        "x.profile_id, count(*) FROM (SELECT profile_id, (timestamp AT TIME ZONE $2)::date AS "
        "day, properties AS p FROM profile.events WHERE workspace_id = $1 AND event_id LIKE "
        "'delivery:%' AND properties->>'status' = 'sent' AND coalesce(properties->>'test', "
        "'false') <> 'true') AS x CROSS JOIN LATERAL (VALUES ('', ''), ('channel', "
        "left(x.p->>'channel', 200)), ('journey', left(x.p->'journey'->>'key', 200)), "
        "('broadcast', left(x.p->>'broadcast', 200)), ('template', left(x.p->>'template', "
        f"200))) AS d(dim, key) {_SEGMENTS} {_INTERVALS} WHERE d.dim = '' OR d.key <> '' "
        "GROUP BY 1, 2, 3, 4, 5, 6, 7, 8", ws, tz)
    # The CRM uplift's control arm: members whose send journey suppressed (kpis_uplift).
    await repo.fetch(
        conn, _INSERT + f"SELECT $1, 'control', '', '', s.seg, i.interval, {_START}, "
        "x.profile_id, count(*) FROM (SELECT profile_id, (timestamp AT TIME ZONE $2)::date AS "
        "day FROM profile.events WHERE workspace_id = $1 AND event_id LIKE 'delivery:%' AND "
        "properties->>'status' = 'suppressed' AND properties->>'rule' = 'control_group' AND "
        "coalesce(properties->>'test', 'false') <> 'true') AS x "
        f"{_SEGMENTS} {_INTERVALS} GROUP BY 1, 2, 3, 4, 5, 6, 7, 8", ws, tz)
    await repo.fetch(
        conn, _INSERT + f"SELECT $1, 'customer', '', '', s.seg, i.interval, {_START}, "
        "x.profile_id, count(*) FROM (SELECT profile_id, day, segments FROM profile.kpi_orders "
        "WHERE workspace_id = $1 AND profile_id <> 'erased') AS x CROSS JOIN LATERAL "
        f"unnest(array[''] || x.segments) AS s(seg) {_INTERVALS} GROUP BY 1, 2, 3, 4, 5, 6, 7, 8",
        ws)
    await repo.fetch(
        conn, "INSERT INTO profile.kpi_counts (workspace_id, day, dim, key, segment, metric, "
        "currency, value) SELECT workspace_id, start, dim, key, segment, figure || '@' || "
        "interval || r.suffix, '', sum(CASE WHEN r.suffix = '' OR n >= 2 THEN 1 ELSE 0 END) "
        "FROM profile.kpi_people CROSS JOIN (VALUES (''), (':repeat')) AS r(suffix) WHERE "
        "workspace_id = $1 GROUP BY 1, 2, 3, 4, 5, 6", ws)


def _delivery(facts: KpiFacts, ws: str, r: Any, props: dict[str, Any]) -> None:
    status = _STATUS.get(props.get("status"))  # type: ignore[arg-type]
    if status is None:
        return
    journey = props.get("journey")
    facts.delivery(ws, r["profile_id"], str(props.get("message_id") or r["event_id"]), status,
                   str(props.get("channel") or ""),
                   journey.get("key") if isinstance(journey, dict) else None,
                   props.get("broadcast"), props.get("template"), r["timestamp"],
                   bool(props.get("test")), props.get("rule"))
