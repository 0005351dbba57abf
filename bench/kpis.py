"""KPI answer time against a plain SQL scan of the same figures, on a loaded workspace.

Loads N profiles and M history events (sends, delivery outcomes, opens, clicks, orders,
refunds, NPS answers over 60 days) with COPY into a scratch database of the Postgres the tests
use and prints the load time; builds the rollups with the rebuild (`kpis_rebuild.rebuild`,
the path behind `POST /v1/kpis/rebuild`: prints its time, target <= 10 min at full size on 2
cores) and a state snapshot; VACUUM ANALYZEs what they wrote (as autovacuum would after the
load; printed); then times, after one untimed read per filter, the KPI answer for 30 days
(`kpis_read.answer`, what `GET /v1/kpis` runs after validation) with no filter and with each
single filter, next to a plain SQL scan of the same event-based figures over `profile.events`,
p50 / p99 side by side.

    .venv/bin/python bench/kpis.py [--scale 1.0] [--profiles 1000000] [--events 10000000]
                                   [--repeat 100] [--scan-repeat 3] [--keep | --reuse NAME]

Default sizes are the issue's (1 M profiles, 10 M events); `--scale 0.01` runs a hundredth.
`--keep` leaves the loaded scratch database in place (its name is printed; drop it with
`DROP DATABASE name`); `--reuse NAME` times the answers on such a database again, skipping
the load, the rebuild and the snapshot (VACUUM ANALYZE it first when it was just loaded:
the bench's own ANALYZE covers the tables it names, autovacuum the rest, in its own time).
`--scan-repeat 0` skips the plain SQL scans.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import _root  # noqa: F401  (the repository root on sys.path: tests.support)
import asyncpg
import orjson

from services.profile import kpis_read, kpis_rebuild, kpis_rebuild_sql, kpis_state, kpis_uplift
from services.profile.domain.conventions import Conventions
from shared.db import create_engine
from shared.db.migrate import upgrade_all
from tests.support.postgres import _run as run_sync
from tests.support.postgres import postgres_server, scratch_database

WS = "bench-kpis"
DAYS = 60
JOURNEYS = [f"journey-{i}" for i in range(8)]
TEMPLATES = [f"template-{i}" for i in range(20)]
BROADCASTS = [f"broadcast-{i}" for i in range(4)]
CONV = Conventions()


def events(profiles: list[str], n: int, end: datetime, seed: int = 7) -> Any:
    """History rows as profile stores them (delivery outcomes as `delivery:` events)."""
    rng = random.Random(seed)
    start = end - timedelta(days=DAYS)
    span = DAYS * 86400
    i = 0
    while i < n:
        pid = rng.choice(profiles)
        at = start + timedelta(seconds=rng.randrange(span))
        journey, template = rng.choice(JOURNEYS), rng.choice(TEMPLATES)
        # A quarter of the messages belong to a broadcast, the rest to a journey.
        origin: dict[str, Any] = {"broadcast": rng.choice(BROADCASTS)} \
            if rng.random() < 0.25 else {"journey": {"key": journey, "version": 1}}
        message = f"m{i}"
        # One message's life: sent, delivered, maybe opened, maybe clicked.
        for status, p in (("sent", 1.0), ("delivered", 0.95), ("opened", 0.4),
                          ("clicked", 0.12)):
            if i >= n or rng.random() > p:
                break
            at += timedelta(minutes=rng.randrange(1, 240))
            props = {"message_id": message, "channel": "email", "status": status,
                     "template": template, **origin}
            yield (WS, f"delivery:{message}:{status}", pid, "track", f"Email {status}",
                   orjson.dumps(props).decode(), at, at)
            i += 1
        if i < n and rng.random() < 0.3:
            order_at = at + timedelta(hours=rng.randrange(1, 72))
            props = {"order_id": f"o{i}", "revenue": round(rng.uniform(5, 300), 2),
                     "currency": "EUR"}
            yield (WS, f"e{i}", pid, "track", "Order Completed", orjson.dumps(props).decode(),
                   order_at, order_at)
            i += 1
            if i < n and rng.random() < 0.05:
                refund = {"order_id": props["order_id"], "revenue": props["revenue"] / 2}
                yield (WS, f"e{i}", pid, "track", "Order Refunded",
                       orjson.dumps(refund).decode(), order_at + timedelta(days=2),
                       order_at + timedelta(days=2))
                i += 1
        if i < n and rng.random() < 0.02:
            yield (WS, f"e{i}", pid, "track", "NPS Survey Submitted",
                   orjson.dumps({"score": rng.randrange(11)}).decode(), at, at)
            i += 1


SCAN = """
SELECT (timestamp AT TIME ZONE 'UTC')::date AS day,
  count(*) FILTER (WHERE properties->>'status' = 'sent') AS sent,
  count(*) FILTER (WHERE properties->>'status' = 'delivered') AS delivered,
  count(DISTINCT properties->>'message_id') FILTER (WHERE properties->>'status'
    IN ('opened', 'clicked')) AS unique_opens,
  count(DISTINCT properties->>'message_id') FILTER (WHERE properties->>'status' = 'clicked')
    AS unique_clicks,
  count(DISTINCT profile_id) FILTER (WHERE properties->>'status' = 'sent') AS reached,
  count(DISTINCT properties->>'order_id') FILTER (WHERE name = 'Order Completed') AS orders,
  sum((properties->>'revenue')::float8) FILTER (WHERE name = 'Order Completed') AS revenue,
  count(DISTINCT profile_id) FILTER (WHERE name = 'Order Completed') AS customers
FROM profile.events WHERE workspace_id = $1 AND timestamp >= $2 AND timestamp < $3 {extra}
GROUP BY 1
"""
SEGMENT = "vip"  # a reporting segment: every fifth profile
FILTERS: list[tuple[str, str, str]] = [
    ("", "", ""), ("channel", "email", "AND properties->>'channel' = 'email'"),
    ("journey", JOURNEYS[0], f"AND properties->'journey'->>'key' = '{JOURNEYS[0]}'"),
    ("broadcast", BROADCASTS[0], f"AND properties->>'broadcast' = '{BROADCASTS[0]}'"),
    ("template", TEMPLATES[0], f"AND properties->>'template' = '{TEMPLATES[0]}'"),
    ("segment", SEGMENT, "AND profile_id IN (SELECT profile_id FROM profile.segment_members "
                         f"WHERE workspace_id = '{WS}' AND segment_key = '{SEGMENT}')")]
TARGET_MS, REBUILD_TARGET_S = 200.0, 600.0


@contextmanager
def timed_steps() -> Iterator[dict[str, float]]:
    """Seconds per rebuild statement, named as kpis_rebuild_sql names them."""
    names = {v: k.strip("_").lower() for k, v in vars(kpis_rebuild_sql).items()
             if isinstance(v, str) and k.startswith("_")}
    steps: dict[str, float] = defaultdict(float)
    original = kpis_rebuild_sql.fetch

    async def fetch(conn: Any, sql: str, *args: Any) -> list[Any]:
        started = time.perf_counter()
        try:
            return await original(conn, sql, *args)
        finally:
            steps[names.get(sql, sql.split()[0].lower())] += time.perf_counter() - started

    kpis_rebuild_sql.fetch = fetch
    try:
        yield steps
    finally:
        kpis_rebuild_sql.fetch = original


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


@contextmanager
def database(server: str, keep: bool, reuse: str) -> Iterator[str]:
    """The run's database URL: a new scratch one (dropped afterwards unless `keep`: then its
    name is printed), or `reuse`."""
    base = server.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    if reuse:
        yield f"{base}/{reuse}"
        return
    if not keep:
        with scratch_database(server) as url:
            yield url
        return
    name = f"tp_bench_kpis_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        conn = await asyncpg.connect(server)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    run_sync(create())
    print(f"database kept after the run: {name} (--reuse {name}; drop it when done)",
          flush=True)
    yield f"{base}/{name}"


async def main(n_profiles: int, n_events: int, repeat: int, scan_repeat: int,
               keep: bool = False, reuse: str = "") -> None:
    end = datetime.now(UTC).replace(microsecond=0)
    with postgres_server() as server, database(server, keep, reuse) as url:
        dsn = url.replace("postgresql+asyncpg://", "postgresql://")
        if reuse:
            conn = await asyncpg.connect(dsn)
            meta = await conn.fetchrow("SELECT end_at, profiles, events FROM public.bench_kpis")
            end, n_profiles, n_events = meta[0], meta[1], meta[2]
            print(f"reusing {reuse}: {n_profiles} profiles, {n_events} events loaded up to "
                  f"{end.isoformat()}", flush=True)
            await answers(conn, url, end, n_profiles, n_events, repeat, scan_repeat)
            await conn.close()
            return
        await asyncio.to_thread(upgrade_all, url)
        conn = await asyncpg.connect(dsn)
        await conn.execute("CREATE TABLE public.bench_kpis (end_at timestamptz, profiles int, "
                           "events int)")
        await conn.execute("INSERT INTO public.bench_kpis VALUES ($1, $2, $3)", end,
                           n_profiles, n_events)
        profiles = [str(uuid.uuid4()) for _ in range(n_profiles)]
        t0 = time.perf_counter()
        first = end - timedelta(days=DAYS)
        await conn.copy_records_to_table(
            "profiles", schema_name="profile",
            columns=["id", "workspace_id", "first_seen_at", "last_seen_at", "email"],
            records=((p, WS, first, end, f"{p[:8]}@example.com") for p in profiles))
        await conn.execute("INSERT INTO profile.segments (workspace_id, key, name, rule, "
                           "reporting) VALUES ($1, $2, 'VIP', '{}', true)", WS, SEGMENT)
        await conn.copy_records_to_table(
            "segment_members", schema_name="profile",
            columns=["workspace_id", "segment_key", "profile_id"],
            records=((WS, SEGMENT, p) for p in profiles[::5]))
        t1 = time.perf_counter()
        await conn.copy_records_to_table(
            "events", schema_name="profile",
            columns=["workspace_id", "event_id", "profile_id", "type", "name", "properties",
                     "timestamp", "received_at"],
            records=events(profiles, n_events, end))
        await conn.execute("ANALYZE profile.events; ANALYZE profile.profiles")
        t2 = time.perf_counter()
        print(f"load (COPY): {n_profiles} profiles {t1 - t0:.1f} s, {n_events} events "
              f"{t2 - t1:.1f} s (generated in this process while copied)")
        engine = create_engine(url)

        async def progress(done: int) -> None:
            print(f"  rebuild: {done:,} of {n_events:,} events at "
                  f"{time.perf_counter() - t3:.0f} s", flush=True)

        t3 = time.perf_counter()
        with timed_steps() as steps:
            await kpis_rebuild.rebuild(engine, WS, progress)
        t4 = time.perf_counter()
        async with engine.begin() as c:
            await kpis_state.take(c, WS, CONV, end)
        t5 = time.perf_counter()
        await conn.execute("ANALYZE profile.kpi_counts; ANALYZE profile.kpi_bits; "
                           "ANALYZE profile.kpi_numbers; ANALYZE profile.kpi_customer_days; "
                           "ANALYZE profile.kpi_control")
        rebuilt = t4 - t3
        full = n_profiles >= 1_000_000 and n_events >= 10_000_000
        verdict = ("met" if rebuilt <= REBUILD_TARGET_S else "NOT met") if full else \
            "not the issue's size"
        print(f"rollups: rebuild {rebuilt:.1f} s ({n_events / max(rebuilt, 1e-9):,.0f} "
              f"events/s; target <= {REBUILD_TARGET_S:.0f} s at 10 M events: {verdict}), "
              f"state snapshot {t5 - t4:.2f} s")
        sizes = await conn.fetch(
            "SELECT relname, n_live_tup FROM pg_stat_user_tables WHERE schemaname = 'profile' "
            "AND relname LIKE 'kpi_%' AND n_live_tup > 0 ORDER BY 1")
        print("  rebuild steps (s): " + ", ".join(
            f"{k} {v:.1f}" for k, v in sorted(steps.items(), key=lambda kv: -kv[1])
            if v >= 0.05))
        print("  rollup rows: " + ", ".join(f"{r[0]} {r[1]:,}" for r in sizes))
        bits = await conn.fetchrow(
            "SELECT count(*), pg_total_relation_size('profile.kpi_bits'), "
            "count(DISTINCT chunk), coalesce(sum(bit_count(bits)), 0) FROM profile.kpi_bits")
        print(f"  people bitmaps: {bits[0]:,} rows, {bits[1] / 2**20:,.1f} MiB with indexes, "
              f"{bits[2]} chunks of numbers, {bits[3]:,} bits set")
        await engine.dispose()
        await settle(conn)
        await answers(conn, url, end, n_profiles, n_events, repeat, scan_repeat)
        await conn.close()


async def settle(conn: asyncpg.Connection) -> None:
    """VACUUM ANALYZE what the load and the rebuild wrote, as autovacuum does in its own time
    after a bulk load (its thresholds count inserts too): timed reads that overlapped that
    first pass on 2 cores measured autovacuum as much as the answer. Printed with its time."""
    s = time.perf_counter()
    tables = await conn.fetch(
        "SELECT relname FROM pg_stat_user_tables WHERE schemaname = 'profile' "
        "AND n_live_tup > 0 ORDER BY relname")
    for (name,) in tables:
        await conn.execute(f'VACUUM (ANALYZE) profile."{name}"')
    print(f"settle: VACUUM ANALYZE of {len(tables)} tables of the profile schema "
          f"{time.perf_counter() - s:.1f} s (what autovacuum would do after the load)",
          flush=True)


async def answers(conn: asyncpg.Connection, url: str, end: datetime, n_profiles: int,
                  n_events: int, repeat: int, scan_repeat: int) -> None:
    """The answers' timings for 30 days, per filter, on a loaded and rebuilt database."""
    engine = create_engine(url)
    full = n_profiles >= 1_000_000 and n_events >= 10_000_000
    last = end.date()
    first_day: date = last - timedelta(days=29)
    print(f"{'filter':<28} {'kpis p50':>10} {'kpis p99':>10} {'scan p50':>10} "
          f"{'scan max':>10} {'+crm p50':>10} {'+crm p99':>10}   (ms, 30 days; kpis "
          f"{repeat} runs, scan {scan_repeat} runs each; +crm: the answer and uplift.crm "
          f"as GET /v1/kpis reads them, concurrently; target p99 < {TARGET_MS:.0f} ms)")
    worst = 0.0
    for dim, key, extra in FILTERS:
        if dim == "segment":
            w = kpis_read.Window(WS, first_day, last, "day", "", "", key)
        else:
            w = kpis_read.Window(WS, first_day, last, "day", dim, key, "")
        answer_times, scan_times, whole_times = [], [], []
        await kpis_read.answer_and_crm(engine, w, CONV)  # untimed: the filter's first read
        for _ in range(repeat):
            s = time.perf_counter()
            async with engine.connect() as c:
                await kpis_read.answer(c, w, CONV)
            answer_times.append(time.perf_counter() - s)
        for _ in range(repeat):
            s = time.perf_counter()
            await kpis_read.answer_and_crm(engine, w, CONV)
            whole_times.append(time.perf_counter() - s)
        for _ in range(scan_repeat):
            s = time.perf_counter()
            await conn.fetch(SCAN.format(extra=extra), WS,
                             datetime.combine(first_day, datetime.min.time(), UTC),
                             datetime.combine(last + timedelta(days=1),
                                              datetime.min.time(), UTC))
            scan_times.append(time.perf_counter() - s)
        scan_times = scan_times or [float("nan")]
        label = f"{dim}={key}" if dim else "(none)"
        worst = max(worst, pct(whole_times, 0.99))
        print(f"{label:<28} {pct(answer_times, 0.5):>10.1f} {pct(answer_times, 0.99):>10.1f}"
              f" {pct(scan_times, 0.5):>10.1f} {max(scan_times) * 1000:>10.1f}"
              f" {pct(whole_times, 0.5):>10.1f} {pct(whole_times, 0.99):>10.1f}", flush=True)
    for segment in ("", SEGMENT):  # what GET /v1/kpis adds: uplift.crm (kpis_uplift)
        crm_times = []
        for _ in range(repeat):
            s = time.perf_counter()
            async with engine.connect() as c:
                await kpis_uplift.crm(c, WS, first_day, last, segment, "EUR")
            crm_times.append(time.perf_counter() - s)
        label = f"uplift.crm {'segment=' + segment if segment else '(none)'}"
        print(f"{label:<28} {pct(crm_times, 0.5):>10.1f} {pct(crm_times, 0.99):>10.1f}",
              flush=True)
    verdict = ("met" if worst < TARGET_MS else "NOT met") if full else \
        "not the issue's size"
    print(f"answer + uplift.crm p99, worst filter: {worst:.1f} ms (target < "
          f"{TARGET_MS:.0f} ms at 1 M profiles and 10 M events: {verdict})")
    await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--scan-repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true",
                        help="leave the loaded scratch database in place (name printed)")
    parser.add_argument("--reuse", default="", metavar="NAME",
                        help="time the answers on a database a --keep run left (no load)")
    args = parser.parse_args()
    asyncio.run(main(max(1, int(args.profiles * args.scale)),
                     max(1, int(args.events * args.scale)), args.repeat, args.scan_repeat,
                     args.keep, args.reuse))
