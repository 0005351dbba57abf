"""Due timers piled up while journey was down, then two replicas started: every timer fires
exactly once (one idempotency key per customer; a command the outbox re-publishes under the
same key is counted apart, messaging drops it), none before its time, both replicas take a
share, and the lateness is printed.

Seeding: one customer enters the journey for real (its instance waits on a 1-hour timer and
its snapshot is stored); journey stops; that instance and snapshot are cloned in bulk SQL
into `TIMERS` customers (new ids, profile ids and addresses). Most are due while journey is
down (from 30 s before the restart to just before it); a tenth fall due 12 to 17 s after
it, once the replicas serve, so "none early" is tested against a running worker's clock, not
only against a backlog, and their lateness is a running worker's.
`make test` seeds 2,000; `make soak` 50,000 (TOUCHPOINT_SOAK_TIMERS overrides)."""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text

from shared.db import create_engine
from shared.kafka import create_producer
from shared.kafka.admin import ensure_topics
from shared.kafka.codec import encode
from shared.settings import Settings
from tests.reliability.harness import (
    SOAK,
    CommandReader,
    Figures,
    entered,
    journey_admin_key,
    kill,
    publish_journey,
    ready,
    serve,
    service_env,
    stop_all,
)
from tests.support.net import free_port

pytestmark = pytest.mark.integration
TIMERS = int(os.environ.get("TOUCHPOINT_SOAK_TIMERS", "50000")) if SOAK else 2_000
DOWN_S = 30.0  # the oldest timer was due this long before the replicas start
LIVE_AT_S, AFTER_S = 12.0, 5.0  # the last tenth falls due from 12 s to 17 s after the start
# (the replicas are serving by then: those measure a running worker's lateness)
JOURNEY = {"key": "rel-timers", "name": "Reliability timers",
           "stages": [{"key": "waiting", "enter": {"event": "Rel Timer"},
                       "steps": [{"id": "later", "wait": "PT1H"},
                                 {"id": "due", "send": {"channel": "email",
                                                        "template": "due"}}]}]}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


@pytest.mark.timeout(900 if SOAK else 300)
async def test_due_timers_fire_once_none_early_across_two_replicas(
        settings: Settings, admin_headers: dict[str, str]) -> None:
    own = settings.model_copy(update={"topic_prefix": f"timers-{uuid.uuid4().hex[:8]}."})
    await ensure_topics(own)
    engine = create_engine(own.database_url)
    ws = f"ws-{uuid.uuid4().hex[:10]}"
    key = await journey_admin_key(engine, ws)
    env = service_env(own, admin_headers)
    ports = [free_port(), free_port()]
    procs = [serve("journey", env, ports[0])]
    reader = CommandReader(own, ws, timeout_ms=200, max_records=5000, fetch_max_wait_ms=50,
                           max_partition_fetch_bytes=8 << 20)
    await reader.start()
    commands = reader.commands
    producer = create_producer(own, client_id="test-timers")
    await producer.start()
    try:
        url = f"http://127.0.0.1:{ports[0]}"
        await publish_journey(url, key, JOURNEY)
        seed = str(uuid.uuid4())
        message = entered(ws, seed, "Rel Timer", eid=f"ev-{seed}")
        await producer.send_and_wait(own.topic("profile-events"), encode(message),
                                     key=f"{ws}:{seed}".encode())
        deadline = time.monotonic() + 60
        while True:  # the seed customer waits on its timer, its snapshot stored
            async with engine.connect() as conn:
                waiting = (await conn.execute(text(
                    "SELECT count(*) FROM journey.instances i JOIN journey.snapshots s "
                    "USING (workspace_id, profile_id) WHERE i.workspace_id = :ws "
                    "AND i.wake_at IS NOT NULL"), {"ws": ws})).scalar_one()
            if waiting:
                break
            assert time.monotonic() < deadline, "the seed customer never entered"
            await asyncio.sleep(0.1)
        kill(procs[0])  # journey is down from here on
        await asyncio.to_thread(procs[0].wait, 20)
        procs.clear()

        seeding = time.monotonic()
        # The replicas start then: after the seeding (about 5,000 rows a second here).
        start_at = datetime.now(UTC) + timedelta(seconds=3 + TIMERS / 4000)
        backlog = TIMERS - TIMERS // 10
        async with engine.begin() as conn:
            # Timer n is due at start - DOWN_S + n * step: the first 90 % before the start,
            # the rest spread over AFTER_S after it. The seed itself is removed.
            await conn.execute(text(
                "CREATE TEMP TABLE due_at ON COMMIT DROP AS SELECT n, "
                "CASE WHEN n < :backlog THEN CAST(:start AS timestamptz) "
                "  - make_interval(secs => CAST(:down AS float8) * (:backlog - n) / :backlog) "
                "ELSE CAST(:start AS timestamptz) + make_interval(secs => :live + CAST(:after "
                "  AS float8) * (n - :backlog) / greatest(1, :timers - :backlog)) END "
                "AS wake_at, "
                "gen_random_uuid()::text AS profile_id FROM generate_series(0, :timers - 1) n"),
                {"backlog": backlog, "start": start_at, "down": DOWN_S, "after": AFTER_S,
                 "live": LIVE_AT_S,
                 "timers": TIMERS})
            await conn.execute(text(
                "INSERT INTO journey.snapshots (workspace_id, profile_id, snapshot, segments, "
                "control, updated_at) SELECT s.workspace_id, d.profile_id, s.snapshot "
                "|| jsonb_build_object('profile_id', d.profile_id, 'email', "
                "d.profile_id || '@example.com'), s.segments, s.control, s.updated_at "
                "FROM journey.snapshots s, due_at d WHERE s.workspace_id = :ws"), {"ws": ws})
            cols = [c for c in (await conn.execute(text(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                "'journey' AND table_name = 'instances'"))).scalars()
                if c not in ("id", "profile_id", "entry_id", "wake_at")]
            copied = ", ".join(f"i.{c}" for c in cols)
            await conn.execute(text(
                f"INSERT INTO journey.instances (id, profile_id, entry_id, wake_at, "
                f"{', '.join(cols)}) SELECT gen_random_uuid()::text, d.profile_id, "
                f"'seed-' || d.n, d.wake_at, {copied} FROM journey.instances i, due_at d "
                f"WHERE i.workspace_id = :ws"), {"ws": ws})
            await conn.execute(text(
                "DELETE FROM journey.instances WHERE workspace_id = :ws AND profile_id = :p"),
                {"ws": ws, "p": seed})
            due = {r.profile_id: r.wake_at for r in await conn.execute(text(
                "SELECT profile_id, wake_at FROM due_at"))}
        seeded_s = time.monotonic() - seeding
        assert len(due) == TIMERS
        while datetime.now(UTC) < start_at:
            await asyncio.sleep(0.05)

        started = datetime.now(UTC)
        procs = [serve("journey", env, port) for port in ports]  # two replicas
        for port in ports:
            await ready(f"http://127.0.0.1:{port}")
        serving = datetime.now(UTC)
        deadline = time.monotonic() + (600 if SOAK else 180)
        while len({c["profile_id"] for c in commands if c["profile_id"] in due}) < TIMERS:
            assert time.monotonic() < deadline, len(commands)
            await asyncio.sleep(0.2)
        await asyncio.sleep(3)  # a late second firing would show now
        fired = [await _fired(f"http://127.0.0.1:{p}") for p in ports]

        keys: dict[str, set[str]] = {}
        backlog_late: list[float] = []  # seconds after its due time, due while down
        live_late: list[float] = []  # the same, due once the replicas served
        early: list[str] = []
        drained = started
        for c in commands:
            pid = c["profile_id"]
            if pid not in due:
                continue
            first = pid not in keys
            keys.setdefault(pid, set()).add(c["idempotency_key"])
            at = datetime.fromisoformat(c["requested_at"])
            late = (at - due[pid]).total_seconds()
            if late < 0:
                early.append(pid)
            if not first:  # a copy the outbox published again: counted apart below
                continue
            if due[pid] < serving:
                backlog_late.append(late)
                drained = max(drained, at)
            else:
                live_late.append(late)
        f = Figures(f"timers-{TIMERS}", TIMERS)
        f.lost = [p for p in due if p not in keys]
        f.duplicated = [p for p, k in keys.items() if len(k) > 1]
        f.bound = (f"early={len(early)} seeded in {seeded_s:.1f}s; two replicas fired "
                   f"{fired[0]:.0f} + {fired[1]:.0f}; backlog of {len(backlog_late)} drained "
                   f"{(drained - started).total_seconds():.1f}s after the start (serving "
                   f"after {(serving - started).total_seconds():.1f}s), lateness p50/p99/max "
                   f"{_spread(backlog_late)}; {len(live_late)} due once serving: lateness "
                   f"p50/p99/max {_spread(live_late)}; re-published under "
                   f"the same key: {sum(1 for c in commands if c['profile_id'] in due) - TIMERS}")
        f.show()
        assert not f.lost and not f.duplicated and not early
        assert all(fired), "both replicas should share the backlog"
    finally:
        await stop_all(procs)
        await reader.stop()
        await producer.stop()
        await engine.dispose()


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{pct(values, 50):.2f}/{pct(values, 99):.2f}/{max(values):.2f}s"


async def _fired(url: str) -> float:
    """This replica's `touchpoint_journey_timers_fired_total`."""
    async with httpx.AsyncClient() as http:
        body = (await http.get(f"{url}/metrics")).text
    return sum(float(m) for m in re.findall(
        r"^touchpoint_journey_timers_fired_total(?:\{[^}]*\})? ([0-9.e+]+)$", body, re.M))
