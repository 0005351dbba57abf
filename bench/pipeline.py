"""Event -> delivered email latency through the four services, next to the broker's own hop.

Starts a Tansu broker, a scratch Postgres database, an SMTP sink and the four services as
separate `touchpoint serve` processes; sends `track` events at a fixed rate and times each
one from the HTTP POST to the SMTP DATA at the sink. In the same run it measures the
ceiling: one produce->consume hop on the same broker (a pipeline has four such hops).

    .venv/bin/python bench/pipeline.py [--rate 200] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime
from typing import Any

import httpx
import orjson
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.db.migrate import upgrade_all
from shared.kafka.admin import ensure_topics
from shared.settings import Settings
from shared.testing.broker import tansu_broker
from shared.testing.measure import consumed, cpu_seconds, processes
from shared.testing.net import free_port
from shared.testing.postgres import postgres_server, scratch_database
from shared.testing.processes import die_with_parent
from shared.testing.ready import wait_ready
from shared.testing.smtp import smtp_sink
from shared.testing.topics import read_topic

LOG_DIR = os.environ.get("BENCH_LOG_DIR", "/tmp")
ADMIN, WRITE = f"tp_admin_bench_{uuid.uuid4().hex}", f"tp_write_bench_{uuid.uuid4().hex}"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def kafka_hop(bootstrap: str, topic: str, fetch_wait_ms: int, n: int = 300) -> list[float]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"hop-{uuid.uuid4()}",
                                auto_offset_reset="latest", fetch_max_wait_ms=fetch_wait_ms)
    await producer.start()
    await consumer.start()
    await asyncio.sleep(1)
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await producer.send_and_wait(topic, b"x", key=b"k")
        while not await consumer.getmany(timeout_ms=100):
            pass
        out.append((time.perf_counter() - start) * 1000)
    await consumer.stop()
    await producer.stop()
    return out


async def stage_breakdown(http: httpx.AsyncClient, url: dict[str, str]) -> list[str]:
    """Mean handler time per consumer, from each service's /metrics."""
    out = []
    for base in url.values():
        text = (await http.get(f"{base}/metrics")).text
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("touchpoint_handler_seconds_sum"):
                sums[line.split('"')[1]] = float(line.rsplit(" ", 1)[1])
            elif line.startswith("touchpoint_handler_seconds_count"):
                counts[line.split('"')[1]] = float(line.rsplit(" ", 1)[1])
        for consumer, total in sums.items():
            n = counts.get(consumer) or 1
            out.append(f"{consumer:28s} {total / n * 1000:8.1f} ms  x{int(n)}")
    return out


async def hop_breakdown(bootstrap: str, users: set[str]) -> dict[str, list[float]]:
    """Per 'Signed Up' event: ingest's received_at -> profile's produced_at (profile-events)
    -> journey's requested_at (send-commands) -> messaging's occurred_at (delivery `sent`)."""
    def stamp(value: str) -> float:
        return datetime.fromisoformat(value).timestamp()

    async def read(topic: str) -> list[dict[str, Any]]:
        idle = {"polls": 0, "seen": -1}

        def drained(records: list[Any]) -> bool:  # three empty polls after the last record
            idle["polls"] = idle["polls"] + 1 if len(records) == idle["seen"] else 0
            idle["seen"] = len(records)
            return bool(records) and idle["polls"] >= 3

        records = await read_topic(bootstrap, topic, drained, timeout=60.0)
        return [orjson.loads(r.value) for r in records]

    received = {e["user_id"]: stamp(e["received_at"]) for e in await read("bench.events")
                if e.get("event") == "Signed Up" and e.get("user_id") in users}
    profiled = {pe["profile_id"]: (pe["event"]["user_id"], stamp(pe["produced_at"]))
                for pe in await read("bench.profile-events")
                if pe["event"].get("event") == "Signed Up"}
    commands = await read("bench.send-commands")
    commanded = {c["profile_id"]: stamp(c["requested_at"]) for c in commands}
    sent = {d["profile_id"]: stamp(d["occurred_at"]) for d in await read("bench.delivery-events")
            if d["status"] == "sent"}
    out: dict[str, list[float]] = {"ingest -> profile-events": [],
                                   "profile-events -> send-commands": [],
                                   "send-commands -> delivery sent": []}
    for pid, (user, at) in profiled.items():
        if user in received and pid in commanded and pid in sent:
            out["ingest -> profile-events"].append((at - received[user]) * 1000)
            out["profile-events -> send-commands"].append((commanded[pid] - at) * 1000)
            out["send-commands -> delivery sent"].append((sent[pid] - commanded[pid]) * 1000)
    return out


async def main(rate: int, seconds: int) -> None:
    with tansu_broker() as bootstrap, postgres_server() as server, \
            scratch_database(server) as db_url, smtp_sink() as (smtp_url, inbox):
        settings = Settings(database_url=db_url, kafka_bootstrap=bootstrap, topic_prefix="bench.",
                            topic_partitions=6, smtp_url=smtp_url, bootstrap_admin_key=ADMIN,
                            bootstrap_write_key=WRITE)
        await asyncio.to_thread(upgrade_all, db_url)
        await ensure_topics(settings)
        await ensure_topics(settings, ["bench.hop"])
        hop = await kafka_hop(bootstrap, "bench.hop", settings.consumer_fetch_max_wait_ms)

        env = {**os.environ, "TOUCHPOINT_DATABASE_URL": db_url,
               "TOUCHPOINT_KAFKA_BOOTSTRAP": bootstrap, "TOUCHPOINT_TOPIC_PREFIX": "bench.",
               "TOUCHPOINT_SMTP_URL": smtp_url, "TOUCHPOINT_BOOTSTRAP_ADMIN_KEY": ADMIN,
               "TOUCHPOINT_BOOTSTRAP_WRITE_KEY": WRITE, "TOUCHPOINT_LOG_LEVEL": "WARNING"}
        ports = {name: free_port() for name in ("ingest", "profile", "journey", "messaging")}
        logs = {name: open(f"{LOG_DIR}/{name}.log", "w") for name in ports}
        procs = [subprocess.Popen([sys.executable, "-m", "touchpoint.cli", "serve", name,
                                   "--port", str(port)], env=env, stdout=logs[name],
                                  stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
                 for name, port in ports.items()]
        url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        try:
            # Past the machine's capacity requests queue up: let them, and count the ones
            # that fail, rather than stop the run at the first pool timeout.
            async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(
                    max_connections=1000, max_keepalive_connections=100)) as http:
                for base in url.values():
                    await wait_ready(http, base, timeout=60)
                admin = {"Authorization": f"Bearer {ADMIN}"}
                await http.put(f"{url['messaging']}/v1/templates/welcome", headers=admin, json={
                    "channel": "email", "subject": "Welcome {{ profile.traits.name }}",
                    "text": "Hello {{ profile.traits.name }}"})
                await http.post(f"{url['journey']}/v1/journeys", headers=admin, json={
                    "key": "welcome", "name": "Welcome", "stages": [
                        {"key": "s", "enter": {"event": "Signed Up"},
                         "steps": [{"id": "hi", "send": {"channel": "email",
                                                         "template": "welcome"}}]}]})
                await http.post(f"{url['journey']}/v1/journeys/welcome/publish", headers=admin)
                total = rate * seconds
                users = [f"b{i}-{uuid.uuid4().hex[:6]}" for i in range(total)]
                batch = [{"type": "identify", "userId": u,
                          "traits": {"email": f"{u}@bench.test", "name": u}} for u in users]
                for i in range(0, total, 200):
                    await http.post(f"{url['ingest']}/v1/batch", auth=(WRITE, ""),
                                    json={"batch": batch[i:i + 200]})
                # Warm-up: wait until profile applied every identify, so no backlog is timed.
                while await consumed(http, url["profile"], "profile.events") < total:
                    await asyncio.sleep(0.2)
                # Warm the whole path once, then measure.
                sent_at: dict[str, float] = {}
                received: dict[str, float] = {}
                original = inbox.handle_DATA

                async def stamp(server, session, envelope):  # type: ignore[no-untyped-def]
                    received[envelope.rcpt_tos[0]] = time.perf_counter()
                    return await original(server, session, envelope)

                inbox.handle_DATA = stamp  # type: ignore[method-assign]
                users_cpu = processes({n: [p.pid] for n, p in zip(ports, procs, strict=True)},
                                      this="bench + smtp sink")
                cpu_before = cpu_seconds(users_cpu)
                started = time.perf_counter()

                refused: list[str] = []

                async def one(user: str) -> None:
                    sent_at[f"{user}@bench.test"] = time.perf_counter()
                    try:
                        response = await http.post(f"{url['ingest']}/v1/track",
                                                   auth=(WRITE, ""),
                                                   json={"userId": user, "event": "Signed Up"})
                        if response.status_code != 200:
                            refused.append(str(response.status_code))
                    except httpx.HTTPError as exc:
                        refused.append(type(exc).__name__)

                tasks = []
                for i, user in enumerate(users):
                    delay = started + i / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(one(user)))
                await asyncio.gather(*tasks)
                deadline = time.perf_counter() + 60
                while len(received) < total and time.perf_counter() < deadline:
                    await asyncio.sleep(0.1)
                elapsed = max(received.values()) - started if received else float("nan")
                cpu_after = cpu_seconds(users_cpu)
                wall = time.perf_counter() - started
                breakdown = await stage_breakdown(http, url)
                hops = await hop_breakdown(bootstrap, set(users))
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(15)

        lat = [(received[a] - sent_at[a]) * 1000 for a in received]
        ordered = sorted(received, key=lambda a: sent_at[a])
        slow = [(i, round((received[a] - sent_at[a]) * 1000)) for i, a in enumerate(ordered)
                if received[a] - sent_at[a] > 0.3]
        if os.environ.get("BENCH_VERBOSE"):
            print("slow (index in send order, ms):", slow[:40])
        print(f"pipeline: {len(received)}/{total} emails delivered at {rate} events/s offered, "
              f"{len(received) / elapsed:.0f} emails/s achieved")
        if refused:
            print(f"  {len(refused)} track requests failed: "
                  f"{', '.join(sorted(set(refused)))} (the offered rate is past capacity)")
        print(f"  event->email ms   p50 {pct(lat, 50):7.1f}  p95 {pct(lat, 95):7.1f}  "
              f"p99 {pct(lat, 99):7.1f}  max {max(lat):7.1f}  mean {statistics.mean(lat):6.1f}")
        print("ceiling: one Kafka hop produce->consume on the same broker (pipeline = 4 hops), "
              f"consumer fetch wait {settings.consumer_fetch_max_wait_ms} ms as the services'")
        print(f"  hop ms            p50 {pct(hop, 50):7.1f}  p95 {pct(hop, 95):7.1f}  "
              f"p99 {pct(hop, 99):7.1f}")
        print("per-consumer handler time (mean ms per polled batch, batches):")
        for line in breakdown:
            print(f"  {line}")
        print(f"  ratio p99 pipeline / (4 x p99 hop) = {pct(lat, 99) / (4 * pct(hop, 99)):.1f}")
        print(f"CPU while measured (% of one core over {wall:.1f} s; the machine has "
              f"{psutil.cpu_count()} cores), ms of CPU per event:")
        spent = {n: cpu_after.get(n, 0.0) - cpu_before.get(n, 0.0) for n in cpu_before}
        for name, seconds_ in sorted(spent.items(), key=lambda kv: -kv[1]):
            print(f"  {name:34s} {100 * seconds_ / wall:5.0f} %  {1000 * seconds_ / total:6.2f} ms")
        print(f"  {'all':34s} {100 * sum(spent.values()) / wall:5.0f} %  "
              f"{1000 * sum(spent.values()) / total:6.2f} ms")
        print("where the time goes, per measured event (wall clock stamped in each message, ms):")
        for name, values in hops.items():
            if values:
                print(f"  {name:34s} p50 {pct(values, 50):7.1f}  p99 {pct(values, 99):7.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.rate, args.seconds))
