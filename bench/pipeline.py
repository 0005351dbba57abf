"""The whole stack, event to delivered email, next to the broker's own hop.

Starts a Tansu broker, a scratch Postgres database and the four services as separate
`touchpoint serve` processes (`--replicas profile=2,journey=2` runs more of one in the same
consumer group). The load generator (bench/loadgen.py) and the SMTP sink (bench/sink.py) run
in processes of their own; their CPU is printed apart and not counted as the stack's.

What an event is: one new customer's `identify` then `track` ("Signed Up"), producing one
email, timed from when the identify was due (open loop) to the DATA at the sink. The
track-only shape (customers identified beforehand) is printed beside it.

Per run it prints the achieved rate, event->email p50/p95/p99, the hops from the messages'
own stamps, records per polled batch of each consumer, and the CPU per event of every
process; the ceiling is one produce->consume hop on the same broker, measured in the same
run. `--runs 3` repeats the measurement on the same stack and prints median and worst.
`--idle 60` first measures the idle stack's CPU over 60 s after 60 s of settling (`--runs 0`:
only that).

    .venv/bin/python bench/pipeline.py --rate 100 --seconds 20 --runs 3 [--shape new|track|both]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import _root  # noqa: F401  (the repository root on sys.path: tests.support)
import httpx
import orjson
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.db.migrate import upgrade_all
from shared.kafka.admin import ensure_topics
from shared.settings import Settings
from tests.support.broker import tansu_broker
from tests.support.measure import cpu_delta, cpu_of, database_postgres, processes
from tests.support.net import free_port, wait_for_port
from tests.support.postgres import postgres_server, scratch_database
from tests.support.processes import die_with_parent
from tests.support.ready import wait_ready
from tests.support.topics import read_topic

HERE = Path(__file__).resolve().parent
LOG_DIR = os.environ.get("BENCH_LOG_DIR", "/tmp")
ADMIN, WRITE = f"tp_admin_bench_{uuid.uuid4().hex}", f"tp_write_bench_{uuid.uuid4().hex}"
SERVICES = ("ingest", "profile", "journey", "messaging")
TOOLS = ("loadgen", "sink")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def kafka_hop(bootstrap: str, topic: str, fetch_wait_ms: int, n: int = 300) -> list[float]:
    """The ceiling of one hop: produce one record, time until a consumer has it."""
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


def parse_replicas(text: str) -> dict[str, int]:
    counts = dict.fromkeys(SERVICES, 1)
    for part in filter(None, text.split(",")):
        name, _, n = part.partition("=")
        if name not in counts or not n.isdigit() or int(n) < 1:
            raise SystemExit(f"--replicas: bad item {part!r} (e.g. profile=2,journey=2)")
        counts[name] = int(n)
    return counts


async def batch_sizes(http: httpx.AsyncClient, urls: list[str]) -> dict[str, tuple[float, float]]:
    """Per consumer, summed over replicas: (records, polled batches) so far."""
    out: dict[str, tuple[float, float]] = {}
    for base in urls:
        for line in (await http.get(f"{base}/metrics")).text.splitlines():
            for suffix, index in (("_sum{", 0), ("_count{", 1)):
                if line.startswith(f"touchpoint_consumer_batch_records{suffix}"):
                    consumer = line.split('"')[1]
                    pair = list(out.get(consumer, (0.0, 0.0)))
                    pair[index] += float(line.rsplit(" ", 1)[1])
                    out[consumer] = (pair[0], pair[1])
            # A poll of two topics handled in one transaction (a joint handler) counts in
            # both topics' rows above, and once here, under "<a>+<b>".
            if line.startswith("touchpoint_handler_seconds_count{") and "+" in line:
                consumer = line.split('"')[1]
                pair = out.get(consumer, (0.0, 0.0))
                out[consumer] = (pair[0], pair[1] + float(line.rsplit(" ", 1)[1]))
    return out


async def hops(bootstrap: str, prefix: str, users: set[str]) -> dict[str, list[float]]:
    """Per measured event, from each message's wall-clock stamp: ingest's received_at of the
    track -> profile's produced_at -> journey's requested_at -> messaging's `sent`."""
    def stamp(value: str) -> float:
        return datetime.fromisoformat(value).timestamp()

    async def read(topic: str) -> list[dict[str, Any]]:
        idle = {"polls": 0, "seen": -1}

        def drained(records: list[Any]) -> bool:
            idle["polls"] = idle["polls"] + 1 if len(records) == idle["seen"] else 0
            idle["seen"] = len(records)
            return bool(records) and idle["polls"] >= 3

        return [orjson.loads(r.value) for r in
                await read_topic(bootstrap, f"{prefix}{topic}", drained, timeout=120.0)]

    received = {e["user_id"]: stamp(e["received_at"]) for e in await read("events")
                if e.get("event") == "Signed Up" and e.get("user_id") in users}
    profiled = {pe["profile_id"]: (pe["event"]["user_id"], stamp(pe["produced_at"]))
                for pe in await read("profile-events")
                if pe["event"].get("event") == "Signed Up" and pe["event"].get("user_id") in users}
    commanded = {c["profile_id"]: stamp(c["requested_at"]) for c in await read("send-commands")
                 if c["profile_id"] in profiled}
    sent = {d["profile_id"]: stamp(d["occurred_at"]) for d in await read("delivery-events")
            if d["status"] == "sent" and d["profile_id"] in profiled}
    out: dict[str, list[float]] = {"ingest -> profile-events": [],
                                   "profile-events -> send-commands": [],
                                   "send-commands -> delivery sent": []}
    for pid, (user, at) in profiled.items():
        if user in received and pid in commanded and pid in sent:
            out["ingest -> profile-events"].append((at - received[user]) * 1000)
            out["profile-events -> send-commands"].append((commanded[pid] - at) * 1000)
            out["send-commands -> delivery sent"].append((sent[pid] - commanded[pid]) * 1000)
    return out


class Stack:
    """The processes of one bench run and where to reach them."""

    def __init__(self, env: dict[str, str], replicas: dict[str, int], sink_out: Path,
                 sink_port: int) -> None:
        self.urls: dict[str, list[str]] = {name: [] for name in SERVICES}
        self.procs: dict[str, list[subprocess.Popen[bytes]]] = {n: [] for n in SERVICES + TOOLS}
        self.sink_out = sink_out
        self.database_url = env["TOUCHPOINT_DATABASE_URL"]
        self.procs["sink"].append(subprocess.Popen(
            [sys.executable, str(HERE / "sink.py"), "--port", str(sink_port),
             "--out", str(sink_out)], preexec_fn=die_with_parent))
        wait_for_port(sink_port)
        for name in SERVICES:
            for i in range(replicas[name]):
                port = free_port()
                log = open(f"{LOG_DIR}/bench-{name}-{i}.log", "w")  # noqa: SIM115
                self.procs[name].append(subprocess.Popen(
                    [sys.executable, "-m", "touchpoint.cli", "serve", name, "--port", str(port)],
                    env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent))
                self.urls[name].append(f"http://127.0.0.1:{port}")

    def groups(self) -> dict[str, list[psutil.Process]]:
        return processes({n: [p.pid for p in ps] for n, ps in self.procs.items() if ps})

    def stop(self) -> None:
        for procs in self.procs.values():
            for proc in procs:
                proc.terminate()
        for procs in self.procs.values():
            for proc in procs:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()

    def received(self) -> dict[str, int]:
        out = {}
        if self.sink_out.exists():
            for line in self.sink_out.read_text().splitlines():
                rcpt, _, at = line.partition("\t")
                out.setdefault(rcpt, int(at))
        return out


async def measure(stack: Stack, http: httpx.AsyncClient, bootstrap: str, prefix: str,
                  shape: str, rate: int, seconds: int, work: Path) -> dict[str, Any]:
    """One open-loop run of `rate` customers per second for `seconds`; its figures."""
    total = rate * seconds
    run = uuid.uuid4().hex[:6]
    users = [f"b{run}-{i}" for i in range(total)]
    identify = [{"type": "identify", "userId": u, "traits": {"email": f"{u}@bench.test",
                                                             "name": u}} for u in users]
    track = [{"userId": u, "event": "Signed Up"} for u in users]
    if shape == "track":  # identified beforehand, settled before the clock starts
        ingest = stack.urls["ingest"][0]
        for i in range(0, total, 200):
            await http.post(f"{ingest}/v1/batch", auth=(WRITE, ""),
                            json={"batch": identify[i:i + 200]})
        await settle(http, stack, "profile.events", timeout=120)
        customers = [{"user": u, "requests": [["track", t]]}
                     for u, t in zip(users, track, strict=True)]
    else:
        customers = [{"user": u, "requests": [["identify", i], ["track", t]]}
                     for u, i, t in zip(users, identify, track, strict=True)]
    plan, sent_file = work / f"plan-{run}.json", work / f"sent-{run}.tsv"
    plan.write_bytes(orjson.dumps({"ingest_urls": stack.urls["ingest"], "write_key": WRITE,
                                   "rate": rate, "customers": customers}))
    all_urls = [u for urls in stack.urls.values() for u in urls]
    batches_before = await batch_sizes(http, all_urls)
    groups = stack.groups()
    loadgen = subprocess.Popen([sys.executable, str(HERE / "loadgen.py"), "--plan", str(plan),
                                "--out", str(sent_file)], preexec_fn=die_with_parent)
    groups["loadgen"] = [psutil.Process(loadgen.pid)]
    groups.update(await database_postgres(stack.database_url))
    cpu_before = cpu_of(groups)
    started = time.time()
    wanted = {f"{u}@bench.test" for u in users}
    deadline = started + seconds + 60
    expected: int | None = None  # customers whose requests were all accepted (200)
    due: dict[str, int] = {}
    refusals: dict[str, int] = {}
    loadgen_cpu = 0.0
    while time.time() < deadline:
        if expected is None and loadgen.poll() is not None:
            lines = sent_file.read_text().splitlines()
            loadgen_cpu = float(lines[0].split()[1])  # "#cpu SECONDS"
            for line in lines[1:]:
                user, at, first, last = line.split("\t")
                if first == last == "200":
                    due[f"{user}@bench.test"] = int(at)
                else:
                    refusals[f"{first}/{last}"] = refusals.get(f"{first}/{last}", 0) + 1
            expected = len(due)
        # CPU is counted until the last accepted event's email arrived, not past it.
        if expected is not None and len(due.keys() & stack.received().keys()) >= expected:
            break
        await asyncio.sleep(0.2)
    del groups["loadgen"]  # it has exited: it reports its own CPU in its output
    # This database's backends (those opened during the run count whole), not other users'.
    groups.update(await database_postgres(stack.database_url))
    spent = cpu_delta(groups, cpu_before)
    loadgen.wait(60)
    wall = time.time() - started
    batches_after = await batch_sizes(http, all_urls)
    refused = sum(refusals.values())
    got = stack.received()
    lat = [(got[a] - due[a]) / 1e6 for a in wanted if a in got and a in due]
    spent["loadgen"] = loadgen_cpu
    first_due = min(due.values(), default=0) / 1e9
    last = max((got[a] for a in wanted if a in got), default=0) / 1e9
    polled = {c: ((after[0] - batches_before.get(c, (0, 0))[0]),
                  (after[1] - batches_before.get(c, (0, 0))[1]))
              for c, after in batches_after.items()}
    return {"shape": shape, "offered": rate, "total": total, "delivered": len(lat),
            "refused": refused, "refusals": refusals,
            "achieved": len(lat) / max(last - first_due, 1e-9),
            "p50": pct(lat, 50), "p95": pct(lat, 95), "p99": pct(lat, 99),
            "max": max(lat, default=float("nan")), "wall": wall, "cpu": spent,
            "batches": polled, "hops": await hops(bootstrap, prefix, set(users))}


async def settle(http: httpx.AsyncClient, stack: Stack, consumer: str, timeout: float) -> None:
    """Until the consumer's lag is 0 on every partition of every replica."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        lags = []
        for base in stack.urls["profile"] + stack.urls["journey"] + stack.urls["messaging"]:
            for line in (await http.get(f"{base}/metrics")).text.splitlines():
                if line.startswith(f'touchpoint_consumer_lag{{consumer="{consumer}"'):
                    lags.append(float(line.rsplit(" ", 1)[1]))
        if lags and not any(lags):
            await asyncio.sleep(1)
            return
        await asyncio.sleep(0.5)


def report(r: dict[str, Any], hop: list[float]) -> None:
    print(f"\n[{r['shape']}] {r['delivered']}/{r['total']} emails at {r['offered']} events/s "
          f"offered, {r['achieved']:.0f}/s achieved"
          + (f", {r['refused']} customers' requests refused (statuses {r['refusals']})"
             if r["refused"] else ""))
    print(f"  event->email ms  p50 {r['p50']:7.1f}  p95 {r['p95']:7.1f}  p99 {r['p99']:7.1f}  "
          f"max {r['max']:7.1f}   (ceiling: one broker hop p50 {pct(hop, 50):.1f}, "
          f"p99 {pct(hop, 99):.1f}; the pipeline has 4 hops)")
    for name, values in r["hops"].items():
        print(f"  hop {name:32s} p50 {pct(values, 50):7.1f}  p99 {pct(values, 99):7.1f} ms")
    print("  records per polled batch:")
    for consumer, (records, polls) in sorted(r["batches"].items()):
        if polls and "+" in consumer:
            print(f"      of them, both topics in one transaction: {int(polls)} polls ({consumer})")
        elif polls:
            print(f"    {consumer:30s} {records / polls:7.1f}  ({int(polls)} polls)")
    stack_cpu = sum(v for k, v in r["cpu"].items() if k not in TOOLS + ("bench",))
    print(f"  CPU (% of one core over {r['wall']:.1f} s) and ms per event:")
    for name, sec in sorted(r["cpu"].items(), key=lambda kv: -kv[1]):
        tag = " (load tool, not the stack's)" if name in TOOLS + ("bench",) else ""
        print(f"    {name:12s} {100 * sec / r['wall']:5.0f} %  {1000 * sec / r['total']:6.2f} ms"
              f"{tag}")
    print(f"    {'stack':12s} {100 * stack_cpu / r['wall']:5.0f} %  "
          f"{1000 * stack_cpu / r['total']:6.2f} ms per event (target <= 8 ms at 100/s)")
    r["stack_cpu_ms"] = 1000 * stack_cpu / r["total"]


async def idle_cpu(stack: Stack, settle_s: int, seconds: int, database_url: str) -> None:
    """The stack's CPU with no traffic: its processes, and of Postgres only this database's
    backends and the server's background processes (other users' queries left out)."""
    await asyncio.sleep(settle_s)
    groups = stack.groups()
    groups.update(await database_postgres(database_url))
    before = cpu_of(groups)
    await asyncio.sleep(seconds)
    groups.update(await database_postgres(database_url))
    spent = {n: v for n, v in cpu_delta(groups, before).items() if n not in TOOLS + ("bench",)}
    print(f"idle stack over {seconds} s after {settle_s} s: "
          f"{100 * sum(spent.values()) / seconds:.1f} % of one core (target <= 10 %): "
          + ", ".join(f"{n} {100 * v / seconds:.1f} %" for n, v in sorted(spent.items())),
          flush=True)


async def main(args: argparse.Namespace) -> None:
    replicas = parse_replicas(args.replicas)
    with tansu_broker() as bootstrap, postgres_server() as server, \
            scratch_database(server) as db_url, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        settings = Settings(database_url=db_url, kafka_bootstrap=bootstrap, topic_prefix=prefix,
                            topic_partitions=args.partitions, bootstrap_admin_key=ADMIN,
                            bootstrap_write_key=WRITE)
        await asyncio.to_thread(upgrade_all, db_url)
        await ensure_topics(settings)
        await ensure_topics(settings, [f"{prefix}hop"])
        hop = await kafka_hop(bootstrap, f"{prefix}hop", settings.consumer_fetch_max_wait_ms)
        env = {**os.environ, "TOUCHPOINT_DATABASE_URL": db_url,
               "TOUCHPOINT_KAFKA_BOOTSTRAP": bootstrap, "TOUCHPOINT_TOPIC_PREFIX": prefix,
               "TOUCHPOINT_BOOTSTRAP_ADMIN_KEY": ADMIN, "TOUCHPOINT_BOOTSTRAP_WRITE_KEY": WRITE,
               "TOUCHPOINT_LOG_LEVEL": "WARNING"}
        sink_port = free_port()
        env["TOUCHPOINT_SMTP_URL"] = f"smtp://127.0.0.1:{sink_port}"
        stack = Stack(env, replicas, work / "sink.tsv", sink_port)
        results: list[dict[str, Any]] = []
        try:
            async with httpx.AsyncClient(timeout=30) as http:
                for urls in stack.urls.values():
                    for base in urls:
                        await wait_ready(http, base, timeout=90)
                await setup_journey(http, stack)
                if args.idle:
                    await idle_cpu(stack, args.idle, args.idle, db_url)
                shapes = ["new", "track"] if args.shape == "both" else [args.shape]
                if args.runs:
                    # Warm the whole path once (connections, caches, group assignments).
                    await measure(stack, http, bootstrap, prefix, "new", 10, 2, work)
                for run in range(args.runs):
                    for shape in shapes:
                        print(f"\n=== run {run + 1} of {args.runs}, shape {shape}", flush=True)
                        result = await measure(stack, http, bootstrap, prefix, shape, args.rate,
                                               args.seconds, work)
                        report(result, hop)
                        results.append(result)
        finally:
            stack.stop()
        if results:
            summarize(results, hop, replicas, args)


async def setup_journey(http: httpx.AsyncClient, stack: Stack) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    messaging, journey = stack.urls["messaging"][0], stack.urls["journey"][0]
    (await http.put(f"{messaging}/v1/templates/welcome", headers=admin, json={
        "channel": "email", "subject": "Welcome {{ profile.traits.name }}",
        "text": "Hello {{ profile.traits.name }}"})).raise_for_status()
    (await http.post(f"{journey}/v1/journeys", headers=admin, json={
        "key": "welcome", "name": "Welcome", "stages": [
            {"key": "s", "enter": {"event": "Signed Up"},
             "steps": [{"id": "hi", "send": {"channel": "email", "template": "welcome"}}]}]})
     ).raise_for_status()
    (await http.post(f"{journey}/v1/journeys/welcome/publish", headers=admin)).raise_for_status()


def summarize(results: list[dict[str, Any]], hop: list[float], replicas: dict[str, int],
              args: argparse.Namespace) -> None:
    print(f"\n=== summary: {args.runs} runs at {args.rate} events/s for {args.seconds} s, "
          f"{args.partitions} partitions, replicas "
          + ", ".join(f"{n}={c}" for n, c in replicas.items()))
    print(f"ceiling: one broker hop produce->consume p50 {pct(hop, 50):.1f} ms, "
          f"p99 {pct(hop, 99):.1f} ms")
    for shape in dict.fromkeys(r["shape"] for r in results):
        rows = [r for r in results if r["shape"] == shape]
        print(f"[{shape}]            median    worst")
        for figure, worst in (("achieved", min), ("p50", max), ("p95", max), ("p99", max),
                              ("stack_cpu_ms", max)):
            values = [r[figure] for r in rows]
            print(f"  {figure:14s} {statistics.median(values):8.1f} {worst(values):8.1f}")
        tools = {t: statistics.median([r["cpu"].get(t, 0.0) / r["wall"] for r in rows])
                 for t in TOOLS}
        print("  load tools (not the stack's), median % of one core: "
              + ", ".join(f"{t} {100 * v:.1f} %" for t, v in tools.items())
              + f", together {100 * sum(tools.values()):.1f} % (budget 30 % at 500/s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=100, help="customers (events) per second")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3, help="0: only --idle")
    parser.add_argument("--shape", choices=("new", "track", "both"), default="both")
    parser.add_argument("--replicas", default="", help="e.g. profile=2,journey=2")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--idle", type=int, default=0,
                        help="settle this many seconds, then measure the idle stack as long")
    asyncio.run(main(parser.parse_args()))
