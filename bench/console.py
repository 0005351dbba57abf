"""Web console: server-side latency of every page and live fragment on a stack at the issue's
size, next to the time the page spent in the services' API calls.

Starts a Tansu broker, a scratch Postgres database, an SMTP sink, the four services and the
console as `touchpoint serve` processes. Seeds in three parts, each timed: 200 customers go
through the real pipeline (ingest's batch API -> profile -> journey -> messaging, 50 published
journeys of three stages, one template); then the services' own tables are filled with
INSERT ... SELECT over generate_series, each further customer a copy of one real customer's
rows under new ids (profile, identities, journey instances and decisions, snapshot, sends,
messages) plus generated events; then profile rebuilds its KPI rollups from the events
(POST /v1/kpis/rebuild). Sizes at --scale 1: 100,000 profiles, 50 journeys, 1 million events,
200,000 messages. Then, warm, requests each page N times with httpx, one at a time, and
reports p50 / p95 of the console's own Server-Timing (`app`: the whole request, server-side;
`api`: the time in its calls to the services). The issue's target: p95 < 300 ms for every
page and fragment.

    .venv/bin/python bench/console.py [--scale 1] [--requests 50] [--db NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import _root  # noqa: F401  (the repository root on sys.path: tests.support)
import asyncpg
import httpx

from shared.db.migrate import upgrade_all
from shared.kafka.admin import ensure_topics
from shared.settings import SERVICES
from tests.support.broker import tansu_broker
from tests.support.measure import consumed
from tests.support.net import free_port
from tests.support.postgres import postgres_server, scratch_database
from tests.support.processes import die_with_parent
from tests.support.ready import wait_ready
from tests.support.smtp import smtp_sink

LOG_DIR = os.environ.get("BENCH_LOG_DIR", "/tmp")
ADMIN, WRITE = f"tp_admin_bench_{uuid.uuid4().hex}", f"tp_write_bench_{uuid.uuid4().hex}"
TIMING = re.compile(r"(\w+);dur=([\d.]+)")
CALLS = re.compile(r'desc="(\d+) calls"')
REAL_PEOPLE = 200  # through the pipeline; the rest are copies of their rows


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def journey(k: int) -> dict[str, Any]:
    """Three stages, so the map has a move that skips one (entered -> bought)."""
    return {"key": f"bench-{k:02d}", "name": f"Bench journey {k}", "goal": {"event": "Bought"},
            "holdout_percent": 10, "stages": [
                {"key": "entered", "enter": {"event": f"Trigger {k}"}, "steps": [
                    {"id": "hello", "send": {"channel": "email", "template": "bench"}},
                    {"id": "pause", "wait": "P3D"},
                    {"id": "check", "branch": {"cases": [{"when": {
                        "field": "profile.traits.plan", "op": "eq", "value": "pro"},
                        "next": "pro"}], "default": "nudge"}},
                    {"id": "nudge", "send": {"channel": "email", "template": "bench"}},
                    {"id": "pro", "exit": True}]},
                {"key": "engaged", "enter": {"event": "Viewed Product"}, "steps": [
                    {"id": "wait", "wait": "P1D"}]},
                {"key": "bought", "enter": {"event": "Bought"}}]}


def real_calls(people: int, n_journeys: int) -> list[dict[str, Any]]:
    """The customers who go through the real pipeline: each enters two journeys; a quarter
    stay in the first stage, a quarter move on to `engaged`, a quarter on to `bought`, and a
    quarter go straight from `entered` to `bought`."""
    calls: list[dict[str, Any]] = []
    for i in range(people):
        user = f"u{i}"
        calls.append({"type": "identify", "userId": user, "traits": {
            "email": f"{user}@bench.test", "name": f"User {i}",
            "plan": "pro" if i % 3 == 0 else "free"}})
        for k in (i % n_journeys, (i + 1) % n_journeys):
            calls.append({"type": "track", "userId": user, "event": f"Trigger {k}"})
        moves = {0: [], 1: ["Viewed Product"], 2: ["Viewed Product", "Bought"],
                 3: ["Bought"]}[i % 4]
        calls += [{"type": "track", "userId": user, "event": name,
                   "properties": {"sku": f"sku-{i % 97}", "revenue": 20 + i % 50}}
                  for name in moves]
    return calls


async def seed_real(http: httpx.AsyncClient, url: dict[str, str], people: int,
                    n_journeys: int) -> int:
    """Template, journeys and REAL_PEOPLE customers through the services' APIs and topics."""
    admin = {"Authorization": f"Bearer {ADMIN}"}
    (await http.put(f"{url['messaging']}/v1/templates/bench", headers=admin, json={
        "channel": "email", "subject": "Hi {{ profile.traits.name }}",
        "html": "<p>Hello {{ profile.traits.name }}</p>"})).raise_for_status()
    for k in range(n_journeys):
        (await http.post(f"{url['journey']}/v1/journeys", headers=admin,
                         json=journey(k))).raise_for_status()
        (await http.post(f"{url['journey']}/v1/journeys/bench-{k:02d}/publish",
                         headers=admin)).raise_for_status()
    calls = real_calls(people, n_journeys)
    for i in range(0, len(calls), 500):
        (await http.post(f"{url['ingest']}/v1/batch", auth=(WRITE, ""),
                         json={"batch": calls[i:i + 500]})).raise_for_status()
    while await consumed(http, url["profile"], "profile.events") < len(calls):
        await asyncio.sleep(1)
    # Let journey and messaging drain: their consumers' counts stop moving.
    last, still = -1.0, 0
    while still < 3:
        now = (await consumed(http, url["journey"], "journey.profile-events")
               + await consumed(http, url["messaging"], "messaging.send-commands"))
        still = still + 1 if now == last else 0
        last = now
        await asyncio.sleep(1)
    return len(calls)


async def clone(conn: asyncpg.Connection, table: str, source: str,
                overrides: dict[str, str]) -> int:
    """INSERT INTO table SELECT every column of the rows `source` selects (aliased `s`, with
    the map `m`), the columns in `overrides` replaced by their expressions."""
    schema, name = table.split(".")
    columns = [r["column_name"] for r in await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND "
        "table_name = $2 AND is_identity = 'NO' ORDER BY ordinal_position", schema, name)]
    exprs = [overrides.get(c, f's."{c}"') for c in columns]
    cols = ", ".join(f'"{c}"' for c in columns)
    status = await conn.execute(
        f"INSERT INTO {table} ({cols}) SELECT {', '.join(exprs)} {source}")
    return int(status.split()[-1])


async def seed_bulk(dsn: str, real: int, profiles: int, events: int,
                    messages: int) -> dict[str, int]:
    """The rest of the customers in the services' own tables, in a few INSERT ... SELECT:
    customer g copies every row the pipeline wrote for real customer g % real (profile,
    identities, journey instances, decisions, snapshot, sends, messages) under new ids, and
    the events are generated to reach `events` in all (10 per customer, 90 days)."""
    conn = await asyncpg.connect(dsn)
    counts: dict[str, int] = {}
    try:
        await conn.execute("CREATE TABLE public.bench_map AS SELECT g, s.profile_id AS src, "
                           "md5('bench-profile-' || g)::uuid::text AS id FROM "
                           "generate_series($1::int, $2::int - 1) g JOIN profile.identities s "
                           "ON s.workspace_id = 'default' AND s.kind = 'user_id' "
                           "AND s.value = 'u' || (g % $1::int)", real, profiles)
        await conn.execute("CREATE INDEX ON public.bench_map (src)")
        by_src = "FROM public.bench_map m JOIN {t} s ON s.profile_id = m.src"
        counts["profiles"] = await clone(
            conn, "profile.profiles", "FROM public.bench_map m JOIN profile.profiles s "
            "ON s.id = m.src", {
                "id": "m.id", "user_id": "'u' || m.g", "email": "'u' || m.g || '@bench.test'",
                "traits": "s.traits || jsonb_build_object('name', 'User ' || m.g, "
                          "'email', 'u' || m.g || '@bench.test')",
                "last_seen_at": "s.last_seen_at - (m.g % 5000) * interval '1 minute'"})
        counts["identities"] = await clone(
            conn, "profile.identities", by_src.format(t="profile.identities"), {
                "profile_id": "m.id",
                "value": "CASE s.kind WHEN 'user_id' THEN 'u' || m.g WHEN 'email' THEN "
                         "'u' || m.g || '@bench.test' WHEN 'profile_id' THEN m.id "
                         "ELSE s.value || '-' || m.g END"})
        counts["snapshots"] = await clone(conn, "journey.snapshots",
                                          by_src.format(t="journey.snapshots"),
                                          {"profile_id": "m.id"})
        new_id = "md5(s.{c} || '-' || m.g)::uuid::text"
        counts["instances"] = await clone(
            conn, "journey.instances", by_src.format(t="journey.instances"), {
                "id": new_id.format(c="id"), "profile_id": "m.id",
                "entry_id": "s.entry_id || '-' || m.g"})
        counts["decisions"] = await clone(
            conn, "journey.decisions", by_src.format(t="journey.decisions"), {
                "profile_id": "m.id", "instance_id": new_id.format(c="instance_id")})
        counts["sends"] = await clone(
            conn, "journey.sends", by_src.format(t="journey.sends"), {
                "profile_id": "m.id",
                "idempotency_key": "left(md5(s.idempotency_key || '-' || m.g), 64)"})
        counts["messages"] = await clone(
            conn, "messaging.messages", by_src.format(t="messaging.messages"), {
                "id": new_id.format(c="id"), "profile_id": "m.id",
                "idempotency_key": "s.idempotency_key || '-' || m.g",
                "recipient": "'u' || m.g || '@bench.test'"})
        # Holdout customers get no message: a second, older copy of the first customers'
        # messages brings the log to `messages` in all.
        short = messages - await conn.fetchval("SELECT count(*) FROM messaging.messages")
        if short > 0:
            first = ("(SELECT DISTINCT ON (x.profile_id) x.* FROM messaging.messages x "
                     "WHERE x.profile_id IN (SELECT src FROM public.bench_map) "
                     "ORDER BY x.profile_id, x.id)")
            await clone(conn, "messaging.messages", f"FROM public.bench_map m JOIN {first} s "
                        "ON s.profile_id = m.src WHERE m.g < (SELECT min(g) FROM "
                        f"public.bench_map) + {int(short)}", {
                "id": "md5(s.id || '-b-' || m.g)::uuid::text", "profile_id": "m.id",
                "idempotency_key": "s.idempotency_key || '-b-' || m.g",
                "recipient": "'u' || m.g || '@bench.test'",
                "created_at": "s.created_at - interval '1 day'"})
        have = await conn.fetchval("SELECT count(*) FROM profile.events")
        names = "(ARRAY['Viewed Product', 'Added to Cart', 'Searched', 'Bought'])"
        # Event e goes to copied customer e % copies: `events` in all, about 10 each.
        status = await conn.execute(
            "INSERT INTO profile.events (workspace_id, event_id, profile_id, type, name, "
            "properties, timestamp, received_at) SELECT 'default', 'bench-' || e, m.id, "
            f"'track', {names}[1 + e % 4], jsonb_build_object('sku', 'sku-' || e % 997, "
            "'revenue', 10 + e % 90), t, t FROM generate_series(0, $1::bigint - 1) e "
            "JOIN public.bench_map m ON m.g = $2::int + e % $3::int CROSS JOIN LATERAL "
            "(SELECT now() - ((e * 7919) % 129600) * interval '1 minute' AS t) x",
            max(0, events - have), real, profiles - real)
        counts["events"] = int(status.split()[-1])
        await conn.execute("DROP TABLE public.bench_map")
        await conn.execute("ANALYZE")
        for table in ("profile.profiles", "profile.events", "journey.instances",
                      "journey.decisions", "messaging.messages"):
            counts[table] = await conn.fetchval(f"SELECT count(*) FROM {table}")
    finally:
        await conn.close()
    return counts


async def measure(http: httpx.AsyncClient, console: str, paths: dict[str, str],
                  n: int) -> list[tuple[str, float, float, float, float, int, int]]:
    page = await http.get(f"{console}/")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    r = await http.post(f"{console}/", data={"admin_key": ADMIN, "csrf": csrf.group(1)})
    assert r.status_code == 303, r.text
    rows = []
    for name, path in paths.items():
        for _ in range(3):  # warm
            await http.get(console + path)
        app, api, statuses = [], [], set()
        for _ in range(n):
            r = await http.get(console + path)
            statuses.add(r.status_code)
            timing = dict(TIMING.findall(r.headers.get("server-timing", "")))
            app.append(float(timing.get("app", 0)))
            api.append(float(timing.get("api", 0)))
            found = CALLS.search(r.headers.get("server-timing", ""))
            calls = int(found.group(1)) if found else 0
        rows.append((name, pct(app, 50), pct(app, 95), pct(api, 50), pct(api, 95), calls,
                     max(statuses)))
    return rows


async def rebuild_kpis(http: httpx.AsyncClient, profile: str) -> None:
    """Profile's own replay of the stored events into the KPI rollups (POST /v1/kpis/rebuild)."""
    admin = {"Authorization": f"Bearer {ADMIN}"}
    r = await http.post(f"{profile}/v1/kpis/rebuild", headers=admin)
    r.raise_for_status()
    run = r.json()
    while run.get("status") == "running":
        await asyncio.sleep(2)
        run = (await http.get(f"{profile}/v1/kpis/rebuild/{run['id']}", headers=admin)).json()
    if run["status"] == "failed":
        raise RuntimeError(f"KPI rebuild failed: {run}")


async def seed(http: httpx.AsyncClient, url: dict[str, str], dsn: str, scale: float,
               profiles: int, n_journeys: int) -> None:
    """The three timed parts: real pipeline, SQL copies, KPI rebuild."""
    started = time.perf_counter()
    real = await seed_real(http, url, REAL_PEOPLE, n_journeys)
    real_s = time.perf_counter() - started
    started = time.perf_counter()
    counts = await seed_bulk(dsn, REAL_PEOPLE, profiles, int(1_000_000 * scale),
                             int(200_000 * scale))
    bulk_s = time.perf_counter() - started
    started = time.perf_counter()
    await rebuild_kpis(http, url["profile"])
    kpi_s = time.perf_counter() - started
    print(f"seeded: {REAL_PEOPLE} customers ({real} calls) through the pipeline in "
          f"{real_s:.0f} s; copied in SQL in {bulk_s:.0f} s ("
          + ", ".join(f"{v:,} {k}" for k, v in counts.items() if "." not in k)
          + "); in all: "
          + ", ".join(f"{v:,} {k}" for k, v in counts.items() if "." in k)
          + f"; KPI rollups rebuilt from the events in {kpi_s:.0f} s", flush=True)


@contextmanager
def kept_database(server: str, name: str) -> Iterator[str]:
    """A database that outlives the run (--db): created if missing (or left half-seeded),
    never dropped."""
    async def create() -> None:
        dsn = server.rsplit("/", 1)[0] + "/" + name
        conn = await asyncpg.connect(server)
        try:
            if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                target = await asyncpg.connect(dsn)
                try:
                    done = await target.fetchval("SELECT to_regclass('public.bench_seeded')")
                finally:
                    await target.close()
                if done:
                    return
                await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')  # half-seeded
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:  # called inside the bench's running loop
        pool.submit(asyncio.run, create()).result()
    yield server.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + "/" + name


async def seeded_before(dsn: str, profiles: int) -> bool:
    """Did an earlier run finish seeding this database at this size (its marker)?"""
    conn = await asyncpg.connect(dsn)
    try:
        if await conn.fetchval("SELECT to_regclass('public.bench_seeded')") is None:
            return False
        return bool(await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM public.bench_seeded WHERE profiles = $1)", profiles))
    finally:
        await conn.close()


async def mark_seeded(dsn: str, profiles: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE public.bench_seeded AS SELECT $1::int AS profiles",
                           profiles)
    finally:
        await conn.close()


async def main(scale: float, n: int, db: str | None) -> None:
    profiles = max(2 * REAL_PEOPLE, int(100_000 * scale))
    n_journeys = 50
    with tansu_broker() as bootstrap, postgres_server() as server, \
            (kept_database(server, db) if db else scratch_database(server)) as db_url, \
            smtp_sink() as (smtp_url, _inbox):
        await asyncio.to_thread(upgrade_all, db_url)
        from shared.settings import Settings
        await ensure_topics(Settings(database_url=db_url, kafka_bootstrap=bootstrap,
                                     topic_prefix="bench.", topic_partitions=6))
        env = {**os.environ, "TOUCHPOINT_DATABASE_URL": db_url,
               "TOUCHPOINT_KAFKA_BOOTSTRAP": bootstrap, "TOUCHPOINT_TOPIC_PREFIX": "bench.",
               "TOUCHPOINT_SMTP_URL": smtp_url, "TOUCHPOINT_BOOTSTRAP_ADMIN_KEY": ADMIN,
               "TOUCHPOINT_BOOTSTRAP_WRITE_KEY": WRITE, "TOUCHPOINT_LOG_LEVEL": "WARNING"}
        ports = {name: free_port() for name in (*SERVICES, "console")}
        url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        env |= {f"TOUCHPOINT_{name.upper()}_URL": url[name] for name in SERVICES}
        logs = {name: open(f"{LOG_DIR}/bench-console-{name}.log", "w") for name in ports}
        procs = [subprocess.Popen([sys.executable, "-m", "touchpoint.cli", "serve", name,
                                   "--port", str(port)], env=env, stdout=logs[name],
                                  stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
                 for name, port in ports.items()]
        try:
            async with httpx.AsyncClient(timeout=60, trust_env=False) as http:
                for base in url.values():
                    await wait_ready(http, base, timeout=60)
                dsn = db_url.replace("+asyncpg", "")
                if db and await seeded_before(dsn, profiles):
                    print(f"database {db} was seeded by an earlier run: not seeding", flush=True)
                else:
                    await seed(http, url, dsn, scale, profiles, n_journeys)
                    if db:
                        await mark_seeded(dsn, profiles)
                admin = {"Authorization": f"Bearer {ADMIN}"}
                someone = (await http.get(f"{url['profile']}/v1/profiles/lookup", headers=admin,
                                          params={"user_id": f"u{profiles - 2}"})).json()["id"]
                paths = {"journeys": "/journeys", "journey map": "/journeys/bench-01",
                         "journey live fragment": "/journeys/bench-01/live",
                         "customer search": "/customers?q=u12",
                         "customer search (email)": "/customers?q=u4711@bench.test",
                         "customer": f"/customers/{someone}",
                         "templates": "/templates", "template": "/templates/bench",
                         "segments": "/segments", "kpis": "/kpis", "broadcasts": "/broadcasts",
                         "policy": "/policy"}
                rows = await measure(http, url["console"], paths, n)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(10)
        print(f"{n} warm requests per page, one at a time; server-side ms (Server-Timing: app = "
              "the whole request, api = its calls to the services); target p95 < 300 ms")
        print(f"{'page':26s} {'p50':>7s} {'p95':>7s} {'api p50':>8s} {'api p95':>8s} "
              f"{'calls':>5s}  status")
        for name, p50, p95, a50, a95, calls, status in rows:
            flag = "met" if p95 < 300 and status == 200 else "NOT MET"
            print(f"{name:26s} {p50:7.1f} {p95:7.1f} {a50:8.1f} {a95:8.1f} {calls:5d}  "
                  f"{status}  {flag}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="1 = 100,000 profiles, 1M events, 200,000 messages")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--db", help="keep the seeded database under this name (not dropped; "
                                     "a later run with the same name skips the seeding)")
    args = parser.parse_args()
    asyncio.run(main(args.scale, args.requests, args.db))
