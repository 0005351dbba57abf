"""Web console: server-side latency of every page and live fragment on a seeded stack, next to
the time the page spent in the services' API calls.

Starts a Tansu broker, a scratch Postgres database, an SMTP sink, the four services and the
console as `touchpoint serve` processes; seeds through the public APIs (ingest's batch API for
profiles and events, journey's and messaging's for journeys and templates; the messages come
from the journeys' sends). Sizes at --scale 1: 100,000 profiles, 50 journeys, 1 million
events, 200,000 messages. Then, warm, requests each page N times with httpx and reports p50 /
p95 of the console's own Server-Timing (`app`: whole request, server-side; `api`: its API
calls). The issue's target: p95 < 300 ms for every page and fragment.

    .venv/bin/python bench/console.py [--scale 0.01] [--requests 50]
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
from typing import Any

import httpx

from shared.db.migrate import upgrade_all
from shared.kafka.admin import ensure_topics
from shared.settings import SERVICES
from shared.testing.broker import tansu_broker
from shared.testing.measure import consumed
from shared.testing.net import free_port
from shared.testing.postgres import postgres_server, scratch_database
from shared.testing.processes import die_with_parent
from shared.testing.ready import wait_ready
from shared.testing.smtp import smtp_sink

LOG_DIR = os.environ.get("BENCH_LOG_DIR", "/tmp")
ADMIN, WRITE = f"tp_admin_bench_{uuid.uuid4().hex}", f"tp_write_bench_{uuid.uuid4().hex}"
TIMING = re.compile(r"(\w+);dur=([\d.]+)")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def journey(k: int) -> dict[str, Any]:
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
                {"key": "bought", "enter": {"event": "Bought"}}]}


async def seed(http: httpx.AsyncClient, url: dict[str, str], scale: float) -> dict[str, Any]:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    profiles = max(10, int(100_000 * scale))
    n_journeys = max(2, round(50 * min(scale * 100, 1)))  # 50 from --scale 0.01 up
    per_profile = max(1, int(1_000_000 * scale) // profiles - 1)  # events besides identify
    await http.put(f"{url['messaging']}/v1/templates/bench", headers=admin, json={
        "channel": "email", "subject": "Hi {{ profile.traits.name }}",
        "html": "<p>Hello {{ profile.traits.name }}</p>"})
    for k in range(n_journeys):
        await http.post(f"{url['journey']}/v1/journeys", headers=admin, json=journey(k))
        await http.post(f"{url['journey']}/v1/journeys/bench-{k:02d}/publish", headers=admin)
    calls: list[dict[str, Any]] = []
    for i in range(profiles):
        user = f"u{i}"
        calls.append({"type": "identify", "userId": user, "traits": {
            "email": f"{user}@bench.test", "name": f"User {i}",
            "plan": "pro" if i % 3 == 0 else "free"}})
        # Two journeys' triggers per profile: ~2 messages each (200,000 at scale 1).
        for j in range(per_profile):
            name = f"Trigger {(i + j) % n_journeys}" if j < 2 else "Viewed Product"
            calls.append({"type": "track", "userId": user, "event": name,
                          "properties": {"sku": f"sku-{j}"}})
    started = time.perf_counter()
    for i in range(0, len(calls), 500):
        r = await http.post(f"{url['ingest']}/v1/batch", auth=(WRITE, ""),
                            json={"batch": calls[i:i + 500]})
        r.raise_for_status()
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
    return {"profiles": profiles, "journeys": n_journeys, "events": len(calls),
            "seeded_s": time.perf_counter() - started}


async def measure(http: httpx.AsyncClient, console: str, paths: dict[str, str],
                  n: int) -> list[tuple[str, float, float, float, float, int]]:
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
        rows.append((name, pct(app, 50), pct(app, 95), pct(api, 50), pct(api, 95),
                     max(statuses)))
    return rows


async def main(scale: float, n: int) -> None:
    with tansu_broker() as bootstrap, postgres_server() as server, \
            scratch_database(server) as db_url, smtp_sink() as (smtp_url, _inbox):
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
            async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
                for base in url.values():
                    await wait_ready(http, base, timeout=60)
                sizes = await seed(http, url, scale)
                admin = {"Authorization": f"Bearer {ADMIN}"}
                someone = (await http.get(f"{url['profile']}/v1/profiles/lookup", headers=admin,
                                          params={"user_id": "u1"})).json()["id"]
                messages = len((await http.get(f"{url['messaging']}/v1/messages", headers=admin,
                                               params={"limit": 500})).json()["items"])
                paths = {"journeys": "/journeys", "journey map": "/journeys/bench-01",
                         "journey live fragment": "/journeys/bench-01/live",
                         "customer search": "/customers?q=u12", "customer": f"/customers/{someone}",
                         "templates": "/templates", "template": "/templates/bench",
                         "kpis": "/kpis", "broadcasts": "/broadcasts"}
                rows = await measure(http, url["console"], paths, n)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(10)
        print(f"seeded {sizes['profiles']} profiles, {sizes['events']} events, "
              f"{sizes['journeys']} journeys (>= {messages} messages) in "
              f"{sizes['seeded_s']:.0f} s; {n} warm requests per page")
        print(f"{'page':24s} {'p50 ms':>8s} {'p95 ms':>8s} {'api p50':>8s} {'api p95':>8s}  status")
        for name, p50, p95, a50, a95, status in rows:
            flag = "" if p95 < 300 else "  (over 300 ms)"
            print(f"{name:24s} {p50:8.1f} {p95:8.1f} {a50:8.1f} {a95:8.1f}  {status}{flag}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="1 = 100,000 profiles, 1M events, 200,000 messages")
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main(args.scale, args.requests))
