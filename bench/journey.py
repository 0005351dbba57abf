"""Journey engine throughput and timer firing, each next to a bare-Postgres ceiling.

Starts a Tansu broker, a scratch Postgres database and the journey service as its own
process (`touchpoint serve journey`). Then, one after the other:

1. events: with 10 published journeys, N ProfileEvents go onto `profile-events`; timed from
   the first produce until the engine has applied all N (inbox rows) and, second figure,
   until their SendCommands have all left the outbox. Each event enters a
   journey instance keyed by its order id: instance row, decisions, a send via the outbox,
   a durable timer. Ceiling: N bare single-row UPDATEs in batches of 500.
2. timer capacity: T instances waiting at a `wait` step, all due at once; timed from the
   first to the last fired (each fires into a send). Ceiling: T bare row UPDATEs.
3. timer lateness: T instances due at a steady rate (`--timer-rate`); lateness = time the
   instance moved (clock_timestamp of its UPDATE) - when it was due; p50/p99/max.
4. broadcast (`--broadcast B`, 0 skips): B profile snapshots in a segment, a contact policy
   (a cap, a 5 % control group, `max_per_second` = `--broadcast-rate`); timed: the
   audience preview (one HTTP call), and the send from `/send` until every recipient was
   handed over (or suppressed) and the outbox was empty, with the service's CPU per
   recipient.

`--policy` saves a contact policy (an email cap) before round 1, so that round's CPU per
event with and without it shows what the policy check costs per send.

Rounds 1 and 2 also print the service process's CPU time per event / wake-up, which a
shared machine disturbs far less than the wall-clock rates.

    .venv/bin/python bench/journey.py [--events 10000] [--timers 100000] [--timer-rate 2000]
        [--broadcast 200000] [--broadcast-rate 20000] [--policy]

The lateness round's default due rate (2,000/s) is below the capacity measured in round 2;
a rate above capacity only measures the backlog.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import _root  # noqa: F401  (the repository root on sys.path: tests.support)
import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaProducer

from shared.settings import Settings
from tests.support.measure import process_cpu
from tests.support.net import free_port
from tests.support.options import bench_options
from tests.support.ready import wait_ready
from tests.support.stack import bench_stack

LOG_DIR = os.environ.get("BENCH_LOG_DIR", "/tmp")
ADMIN = f"tp_admin_bench_{uuid.uuid4().hex}"
WS = "bench"
BATCH = 500



def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def journey(k: int) -> dict[str, Any]:
    return {"key": f"j{k}", "name": f"Journey {k}", "instance_key": "event.properties.order_id",
            "stages": [{"key": "bought", "enter": {"event": f"E{k}", "where": {
                "field": "event.properties.total", "op": "gte", "value": 10}}, "steps": [
                {"id": "thanks", "send": {"channel": "email", "template": f"t{k}"}},
                {"id": "later", "wait": "P1D"},
                {"id": "again", "send": {"channel": "email", "template": f"t{k}"}}]},
                {"key": "reviewed", "enter": {"event": f"R{k}"}}],
            "exit_when": [{"event": f"X{k}"}], "frequency_cap": {"email": {"max": 5,
                                                                            "per": "P1D"}}}


TIMERS = {"key": "timers", "name": "Timers", "stages": [{"key": "s", "enter": {"event": "T"},
                                                        "steps": [
    {"id": "nap", "wait": "PT1S"}, {"id": "hi", "send": {"channel": "email", "template": "hi"}}]}]}


async def publish_all(http: httpx.AsyncClient, base: str) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    for doc in [journey(k) for k in range(10)] + [TIMERS]:
        assert (await http.post(f"{base}/v1/journeys", headers=admin, json=doc)).status_code \
            == 201
        r = await http.post(f"{base}/v1/journeys/{doc['key']}/publish", headers=admin)
        assert r.status_code == 200, r.text


def profile_event(n: int, now: str) -> tuple[bytes, bytes]:
    pid = f"p{n % 5000}"
    event_id = f"ev-{n}-{uuid.uuid4().hex[:8]}"
    body = {"id": event_id, "workspace_id": WS, "profile_id": pid,
            "profile": {"profile_id": pid, "user_id": f"u{pid}", "email": f"{pid}@bench.test",
                        "timezone": "UTC", "traits": {"plan": "pro"}},
            "event": {"id": event_id, "workspace_id": WS, "type": "track", "event": f"E{n % 10}",
                      "user_id": f"u{pid}", "properties": {"order_id": f"o{n}", "total": 42},
                      "timestamp": now, "received_at": now}}
    return f"{WS}:{pid}".encode(), orjson.dumps(body)


async def events_phase(settings: Settings, pg: asyncpg.Connection, n: int
                       ) -> tuple[float, float]:
    """Returns the time from the first produce until all n were applied (inbox rows), and
    until their SendCommands had left the outbox too (published to the broker)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5,
                                acks="all")
    await producer.start()
    now = datetime.now(UTC).isoformat()
    messages = [profile_event(i, now) for i in range(n)]
    started = time.perf_counter()
    futures = [await producer.send(settings.topic("profile-events"), value, key=key)
               for key, value in messages]
    await asyncio.gather(*futures)
    await producer.stop()
    while await pg.fetchval("SELECT count(*) FROM journey.inbox WHERE consumer = "
                            "'journey.profile-events'") < n:
        await asyncio.sleep(0.05)
    applied = time.perf_counter() - started
    while await pg.fetchval("SELECT EXISTS (SELECT 1 FROM journey.outbox)"):
        await asyncio.sleep(0.05)
    return applied, time.perf_counter() - started


async def waiting_instances(pg: asyncpg.Connection, n: int, due: list[datetime]) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    now = datetime.now(UTC)
    rows = [(i, WS, "timers", 1, f"t{k}", "", f"seed-{i}", "s", "nap", "active", False, 1, 1,
             due[k], "wait", now, now, "{}") for k, i in enumerate(ids)]
    await pg.copy_records_to_table(
        "instances", schema_name="journey", records=rows,
        columns=["id", "workspace_id", "journey_key", "version", "profile_id", "instance_key",
                 "entry_id", "stage", "step", "status", "holdout", "epoch", "seq", "wake_at",
                 "wake_kind", "entered_at", "stage_entered_at", "context"])
    snapshots = [(WS, f"t{k}", orjson.dumps({"profile_id": f"t{k}", "email": f"t{k}@bench.test",
                                              "timezone": "UTC"}).decode())
                 for k in range(n)]
    await pg.execute("DELETE FROM journey.snapshots WHERE profile_id LIKE 't%'")
    await pg.copy_records_to_table("snapshots", schema_name="journey", records=snapshots,
                                   columns=["workspace_id", "profile_id", "snapshot"])
    return ids


async def fired(pg: asyncpg.Connection, n: int, timeout: float) -> list[Any]:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        # EXISTS through the claim's own index: a count over the waiting rows every tick
        # would compete with the engine for the same two cores.
        if not await pg.fetchval("SELECT EXISTS (SELECT 1 FROM journey.instances WHERE "
                                 "status = 'active' AND wake_at IS NOT NULL AND "
                                 "journey_key = 'timers')"):
            break
        await asyncio.sleep(0.1)
    rows = await pg.fetch("SELECT id, updated_at FROM journey.instances WHERE journey_key = "
                          "'timers' AND wake_at IS NULL")
    await pg.execute("DELETE FROM journey.instances WHERE journey_key = 'timers'")
    return list(rows)


async def ceiling(pg: asyncpg.Connection, n: int) -> float:
    """n bare single-row UPDATEs, BATCH per transaction: what Postgres alone allows."""
    await pg.execute("CREATE TEMP TABLE bare (id int PRIMARY KEY, wake_at timestamptz, n int)")
    await pg.execute("INSERT INTO bare SELECT g, now(), 0 FROM generate_series(1, $1) g", n)
    started = time.perf_counter()
    for first in range(1, n + 1, BATCH):
        async with pg.transaction():
            await pg.executemany("UPDATE bare SET wake_at = NULL, n = n + 1 WHERE id = $1",
                                 [(i,) for i in range(first, min(first + BATCH, n + 1))])
    rate = n / (time.perf_counter() - started)
    await pg.execute("DROP TABLE bare")
    return rate


async def handler_batches(http: httpx.AsyncClient, base: str) -> str:
    """Batches the profile-events handler ran and their mean time, from /metrics."""
    total = count = 0.0
    for line in (await http.get(f"{base}/metrics")).text.splitlines():
        if 'consumer="journey.profile-events"' not in line:
            continue
        if line.startswith("touchpoint_handler_seconds_sum"):
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith("touchpoint_handler_seconds_count"):
            count = float(line.rsplit(" ", 1)[1])
    return f"{int(count)} handler batches, {total / max(count, 1) * 1000:.1f} ms mean"


POLICY = {"caps": [{"channel": "email", "max": 100, "per": "P1D"}]}


async def broadcast_phase(http: httpx.AsyncClient, base: str, pg: asyncpg.Connection,
                          n: int, rate: int, pid: int) -> dict[str, float]:
    """Preview and send a broadcast to `n` profiles of a segment, under a contact policy."""
    admin = {"Authorization": f"Bearer {ADMIN}"}
    r = await http.put(f"{base}/v1/policy", headers=admin, json=POLICY | {
        "control_group_percent": 5, "max_per_second": rate})
    assert r.status_code == 200, r.text
    # Snapshots as journey keeps them (control decided as if seen under this policy).
    await pg.execute(
        "INSERT INTO journey.snapshots (workspace_id, profile_id, snapshot, segments, control) "
        "SELECT $1, 'b' || g, jsonb_build_object('profile_id', 'b' || g, 'email', "
        "'b' || g || '@bench.test', 'segments', jsonb_build_array('bench'), 'timezone', "
        "'UTC'), ARRAY['bench'], g % 20 = 0 FROM generate_series(1, $2) AS g", WS, n)
    # The template's facts and the draft go in directly: this round runs no messaging.
    await pg.execute("INSERT INTO journey.templates_seen (workspace_id, key, channel, category) "
                     "VALUES ($1, 'news', 'email', 'marketing')", WS)
    await pg.execute("INSERT INTO journey.broadcasts (workspace_id, key, document, status) "
                     "VALUES ($1, 'bench', $2::jsonb, 'draft')", WS,
                     orjson.dumps({"segment": "bench", "template": "news", "channel": "email",
                                   "throttle_per_second": rate}).decode())
    started = time.perf_counter()
    r = await http.post(f"{base}/v1/broadcasts/bench/preview", headers=admin, timeout=120)
    preview_s = time.perf_counter() - started
    assert r.status_code == 200, r.text
    expected = r.json()["recipients"]
    cpu = process_cpu(pid)
    started = time.perf_counter()
    r = await http.post(f"{base}/v1/broadcasts/bench/send", headers=admin, timeout=120)
    assert r.status_code == 200, r.text
    while await pg.fetchval("SELECT EXISTS (SELECT 1 FROM journey.broadcast_audience WHERE "
                            "broadcast_key = 'bench' AND status = 'pending')"):
        await asyncio.sleep(0.1)
    handed = time.perf_counter() - started
    while await pg.fetchval("SELECT EXISTS (SELECT 1 FROM journey.outbox)"):
        await asyncio.sleep(0.05)
    published = time.perf_counter() - started
    sent = await pg.fetchval("SELECT count(*) FROM journey.broadcast_audience WHERE "
                             "broadcast_key = 'bench' AND status = 'sent'")
    return {"preview_s": preview_s, "expected": expected, "sent": sent, "handed_s": handed,
            "published_s": published, "cpu": (process_cpu(pid) - cpu) / n}


async def main(n_events: int, n_timers: int, timer_rate: int, n_broadcast: int = 0,
               broadcast_rate: int = 20_000, with_policy: bool = False) -> None:
    async with bench_stack(bootstrap_admin_key=ADMIN) as settings:
        bootstrap, db_url = settings.kafka_bootstrap, settings.database_url
        env = {**os.environ, "TOUCHPOINT_DATABASE_URL": db_url,
               "TOUCHPOINT_KAFKA_BOOTSTRAP": bootstrap, "TOUCHPOINT_TOPIC_PREFIX": "bench.",
               "TOUCHPOINT_BOOTSTRAP_ADMIN_KEY": ADMIN, "TOUCHPOINT_DEFAULT_WORKSPACE": WS,
               "TOUCHPOINT_LOG_LEVEL": "WARNING"}
        port = free_port()
        log = open(f"{LOG_DIR}/journey-bench.log", "w")
        # BENCH_PROFILE=FILE runs the service under cProfile (to find where time goes).
        profile = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] \
            if os.environ.get("BENCH_PROFILE") else []
        proc = subprocess.Popen([sys.executable, *profile, "-m", "touchpoint.cli", "serve",
                                 "journey", "--port", str(port)], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        pg = await asyncpg.connect(db_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                await wait_ready(http, base, timeout=60)
                await publish_all(http, base)
                if with_policy:
                    r = await http.put(f"{base}/v1/policy", json=POLICY,
                                       headers={"Authorization": f"Bearer {ADMIN}"})
                    assert r.status_code == 200, r.text
            await events_phase(settings, pg, 500)  # warm-up: connections, parsed documents
            cpu = process_cpu(proc.pid)
            applied, published = await events_phase(settings, pg, n_events)
            events_rate = n_events / applied
            # CPU until the outbox is empty: the engine's work also includes publishing what
            # it decided; a build that left more of that for later would look cheaper.
            events_cpu = (process_cpu(proc.pid) - cpu) / n_events
            async with httpx.AsyncClient(timeout=10) as http:
                batches = await handler_batches(http, base)
            events_ceiling = await ceiling(pg, n_events)

            now = datetime.now(UTC) + timedelta(seconds=1)
            await waiting_instances(pg, n_timers, [now] * n_timers)
            cpu = process_cpu(proc.pid)
            rows = await fired(pg, n_timers, timeout=120)
            timers_cpu = (process_cpu(proc.pid) - cpu) / max(len(rows), 1)
            moved = sorted(r["updated_at"] for r in rows)
            capacity = len(rows) / max((moved[-1] - moved[0]).total_seconds(), 1e-3)
            timers_ceiling = await ceiling(pg, n_timers)

            lead = timedelta(seconds=3)
            start = datetime.now(UTC) + lead
            due = [start + timedelta(seconds=k / timer_rate) for k in range(n_timers)]
            ids = await waiting_instances(pg, n_timers, due)
            due_of = dict(zip(ids, due, strict=True))
            rows = await fired(pg, n_timers, timeout=120 + n_timers / timer_rate)
            late = [(r["updated_at"] - due_of[r["id"]]).total_seconds() for r in rows]
            bcast = None
            if n_broadcast:
                async with httpx.AsyncClient(timeout=10) as http:
                    bcast = await broadcast_phase(http, base, pg, n_broadcast, broadcast_rate,
                                                  proc.pid)
        finally:
            await pg.close()
            proc.send_signal(signal.SIGINT)  # a clean exit (lets a profiler write its file)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    print(f"events: {n_events} ProfileEvents, 10 published journeys (+1 timer journey)"
          + (", contact policy with an email cap" if with_policy else ""))
    print(f"  engine   {events_rate:8.0f} events/s   (target >= 3,000)")
    print(f"           {n_events / published:8.0f} events/s until every SendCommand was "
          f"published")
    print(f"  ceiling  {events_ceiling:8.0f} bare row updates/s ({BATCH} per transaction)")
    print(f"  ratio engine / ceiling = {events_rate / events_ceiling:.2f}   ({batches}, "
          f"warm-up included)")
    print(f"  service CPU {events_cpu * 1e6:6.0f} us per event, outbox published (one core "
          f"would do {1 / events_cpu:.0f}/s)")
    print(f"timers: {n_timers} customers waiting, all due at once (each fires into a send)")
    print(f"  engine   {capacity:8.0f} wake-ups/s  (target >= 5,000)")
    print(f"  ceiling  {timers_ceiling:8.0f} bare row updates/s")
    print(f"  ratio engine / ceiling = {capacity / timers_ceiling:.2f}")
    print(f"  service CPU {timers_cpu * 1e6:6.0f} us per wake-up (one core would do "
          f"{1 / timers_cpu:.0f}/s)")
    print(f"timers: {n_timers} due at {timer_rate}/s; lateness (target p99 <= 1 s), "
          f"{len(late)} fired")
    if late:
        print(f"  s late   p50 {pct(late, 50):6.3f}  p99 {pct(late, 99):6.3f}  "
              f"max {max(late):6.3f}")
    if bcast:
        print(f"broadcast: {n_broadcast} profiles in a segment, policy (cap, 5 % control "
              f"group), {broadcast_rate}/s")
        print(f"  preview  {bcast['preview_s']:8.3f} s   (target < 2 s for 200,000); "
              f"{bcast['expected']:.0f} recipients")
        print(f"  handed   {bcast['handed_s']:8.3f} s   ({bcast['sent']:.0f} sent, "
              f"{bcast['sent'] / max(bcast['handed_s'], 1e-3):.0f}/s); outbox empty after "
              f"{bcast['published_s']:.3f} s")
        print(f"  service CPU {bcast['cpu'] * 1e6:6.0f} us per recipient")


if __name__ == "__main__":
    parser = bench_options(__doc__, events=10_000, timers=100_000, timer_rate=2_000,
                           broadcast=200_000, broadcast_rate=20_000)
    parser.add_argument("--policy", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.events, args.timers, args.timer_rate, args.broadcast,
                     args.broadcast_rate, args.policy))
