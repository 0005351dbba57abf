"""Ingest throughput and accept latency, next to the raw-producer ceiling on the same broker.

Starts a Tansu broker, a scratch Postgres database and `touchpoint serve ingest` as its own
process. In the same run it measures:

1. the ceiling: a bare aiokafka producer (acks=all, same linger) sending the same events,
   already encoded, with the same keys, to the same topic;
2. `/v1/batch` throughput (batches as analytics-python sends them, several connections);
3. `/v1/track` requests/s (closed loop, many connections);
4. `/v1/track` accept latency at a fixed offered rate (open loop: timed from when each
   request was due, so a stall is not hidden).

Every event has its own messageId, so every one goes through dedupe and the broker. The
HTTP client is a minimal keep-alive HTTP/1.1 client so the load generator costs little.

    .venv/bin/python bench/ingest.py [--events 100000] [--batch-size 100] [--track-seconds 8]
                                     [--track-connections 64] [--rate 1000] [--latency-seconds 10]
                                     [--idle-stack [--settle 60]]

`--idle-stack` runs the rest of an idle stack beside it (profile, journey and messaging
as `touchpoint serve` processes on the same broker and database, consuming topics of their
own prefix, so they stay idle), lets it settle, then measures the ceiling and ingest with
it running: the ratio batch/ceiling is the one with the idle stack beside (target >= 0.5);
the ceiling measured before the stack started is printed too, and the stack's CPU while
batch ingest ran.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import _root  # noqa: F401  (the repository root on sys.path: tests.support)
import orjson
import psutil
from aiokafka import AIOKafkaProducer

from services.ingest.domain.calls import Call, event_document
from services.ingest.publisher import Outgoing
from shared.kafka.admin import ensure_topics
from shared.settings import Settings
from tests.support.net import free_port, wait_for_port
from tests.support.options import bench_options
from tests.support.processes import die_with_parent
from tests.support.stack import bench_stack
from tests.support.topics import read_topic

LOG_DIR = os.environ.get("BENCH_LOG_DIR", "/tmp")
WRITE = f"tp_write_bench_{uuid.uuid4().hex}"
RUN = uuid.uuid4().hex[:8]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def calls(prefix: str) -> Iterator[dict[str, Any]]:
    """Small realistic track calls, each with its own messageId."""
    now = datetime.now(UTC).isoformat()
    i = 0
    while True:
        yield {"type": "track", "userId": f"user-{i % 5000}", "event": "Product Viewed",
               "messageId": f"{RUN}-{prefix}-{i}", "timestamp": now,
               "properties": {"sku": f"SKU-{i % 977}", "price": 19.99, "currency": "EUR"},
               "context": {"library": {"name": "bench", "version": "1"}}}
        i += 1


class Connection:
    """One keep-alive HTTP/1.1 connection: send a pre-built request, read the answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> int:
        async with asyncio.timeout(30):  # a hung request fails the run instead of stalling it
            return await self._request(raw)

    async def _request(self, raw: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return int(head[9:12])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def http_post(path: str, body: bytes) -> bytes:
    auth = base64.b64encode(f"{WRITE}:".encode()).decode()
    return (f"POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Basic {auth}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body


def cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


async def ceiling(bootstrap: str, topic: str, n: int, linger_ms: int) -> tuple[float, float]:
    """Events/s of a bare producer sending the events ingest would publish, and its CPU
    microseconds per event (a figure the other load on a shared machine disturbs less)."""
    received = datetime.now(UTC)
    source = calls("raw")
    messages = []
    for _ in range(n):
        event = Outgoing.of(event_document(Call.model_validate(next(source)),
                                           workspace_id="default", received_at=received))
        messages.append((event.value, event.key, event.headers))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms,
                                enable_idempotence=False, max_request_size=2 * 1024 * 1024)
    await producer.start()
    try:
        me = psutil.Process()
        started, cpu = time.perf_counter(), cpu_s(me)
        for i in range(0, n, 5000):
            futures = [await producer.send(topic, value, key=key, headers=headers)
                       for value, key, headers in messages[i:i + 5000]]
            await asyncio.gather(*futures)
        return n / (time.perf_counter() - started), (cpu_s(me) - cpu) / n * 1e6
    finally:
        await producer.stop()


async def closed_loop(port: int, requests: list[bytes], connections: int,
                      seconds: float | None = None) -> tuple[int, float, list[int]]:
    """Send `requests` over `connections` as fast as answers come back.

    Returns (requests done, elapsed s, non-200 statuses)."""
    pending = iter(requests)
    done, bad = 0, []
    started = time.perf_counter()
    stop_at = started + seconds if seconds else float("inf")

    async def worker() -> None:
        nonlocal done
        conn = Connection(port)
        try:
            for raw in pending:
                status = await conn.request(raw)
                done += 1
                if status != 200:
                    bad.append(status)
                if time.perf_counter() > stop_at:
                    return
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return done, time.perf_counter() - started, bad


async def open_loop(port: int, rate: int, seconds: float) -> tuple[list[float], list[int]]:
    """Offer `rate` track requests/s; latency (ms) is measured from when each was due."""
    source = calls("lat")
    requests = [http_post("/v1/track", orjson.dumps(next(source)))
                for _ in range(int(rate * seconds))]
    free: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(64):
        free.put_nowait(Connection(port))
    latencies: list[float] = []
    bad: list[int] = []

    async def one(raw: bytes, due: float) -> None:
        conn = await free.get()
        try:
            status = await conn.request(raw)
        finally:
            free.put_nowait(conn)
        latencies.append((time.perf_counter() - due) * 1000)
        if status != 200:
            bad.append(status)

    started = time.perf_counter()
    tasks = []
    for i, raw in enumerate(requests):
        due = started + i / rate
        if (delay := due - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(raw, due)))
    await asyncio.gather(*tasks)
    while not free.empty():
        free.get_nowait().close()
    return latencies, bad


async def on_topic(bootstrap: str, topic: str, expected: int) -> int:
    """Distinct message ids on the topic, read back from the start. (Tansu's ListOffsets
    answers wrong end offsets for batched writes, so offsets cannot be used to count.)"""
    last = {"count": -1, "at": time.monotonic()}

    def complete_or_quiet(records: list[Any]) -> bool:
        if len(records) != last["count"]:
            last.update(count=len(records), at=time.monotonic())
        return len(records) >= expected or time.monotonic() - last["at"] > 2

    records = await read_topic(bootstrap, topic, complete_or_quiet, timeout=60)
    return len({dict(r.headers)["message-id"] for r in records})


IDLE = ("profile", "journey", "messaging")  # beside ingest, on topics of their own


def idle_stack(env: dict[str, str], settings: Settings) -> list[subprocess.Popen[bytes]]:
    """The other services of the stack, consuming `idle.`-prefixed topics: no traffic."""
    env = {**env, "TOUCHPOINT_TOPIC_PREFIX": "idle."}
    procs = []
    for name in IDLE:
        log = open(f"{LOG_DIR}/bench-ingest-idle-{name}.log", "w")  # noqa: SIM115
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "touchpoint.cli", "serve", name, "--port", str(free_port())],
            env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent))
    return procs


async def main(args: argparse.Namespace) -> None:
    async with bench_stack(bootstrap_write_key=WRITE) as settings:
        bootstrap, db_url = settings.kafka_bootstrap, settings.database_url
        await ensure_topics(settings, ["bench.raw"])
        raw_rate, raw_cpu = await ceiling(bootstrap, "bench.raw", args.events,
                                          settings.producer_linger_ms)
        env = {**os.environ, "TOUCHPOINT_DATABASE_URL": db_url,
               "TOUCHPOINT_KAFKA_BOOTSTRAP": bootstrap, "TOUCHPOINT_TOPIC_PREFIX": "bench.",
               "TOUCHPOINT_BOOTSTRAP_WRITE_KEY": WRITE, "TOUCHPOINT_LOG_LEVEL": "WARNING"}
        stack: list[subprocess.Popen[bytes]] = []
        alone_rate = raw_rate
        if args.idle_stack:
            await ensure_topics(settings.model_copy(update={"topic_prefix": "idle."}))
            stack = idle_stack(env, settings)
            await asyncio.sleep(args.settle)
            # The ceiling again, in the same conditions as ingest: the idle stack beside.
            await ensure_topics(settings, ["bench.raw2"])
            raw_rate, raw_cpu = await ceiling(bootstrap, "bench.raw2", args.events,
                                              settings.producer_linger_ms)
            stack_procs = [psutil.Process(p.pid) for p in stack]

        port = free_port()
        log = open(f"{LOG_DIR}/bench-ingest.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "touchpoint.cli", "serve", "ingest",
                                 "--port", str(port)], env=env, stdout=log,
                                stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        try:
            wait_for_port(port, 30)
            conn = Connection(port)
            while await conn.request(b"GET /readyz HTTP/1.1\r\nHost: b\r\n\r\n") != 200:
                await asyncio.sleep(0.1)
            conn.close()
            source = calls("warm")
            warm = [http_post("/v1/batch", orjson.dumps({"batch": [next(source)
                                                                   for _ in range(100)]}))
                    for _ in range(50)]
            await closed_loop(port, warm, 4)

            source = calls("batch")
            batches = [http_post("/v1/batch", orjson.dumps(
                {"batch": [next(source) for _ in range(args.batch_size)],
                 "sentAt": datetime.now(UTC).isoformat()}))
                for _ in range(args.events // args.batch_size)]
            server = psutil.Process(proc.pid)
            cpu = cpu_s(server)
            stack_cpu = sum(cpu_s(p) for p in stack_procs) if stack else 0.0
            done, elapsed, bad_batch = await closed_loop(port, batches, args.connections)
            if stack:
                stack_cpu = sum(cpu_s(p) for p in stack_procs) - stack_cpu
            batch_rate = done * args.batch_size / elapsed
            batch_cpu = (cpu_s(server) - cpu) / (done * args.batch_size) * 1e6

            source = calls("track")
            tracks = [http_post("/v1/track", orjson.dumps(next(source)))
                      for _ in range(args.track_seconds * 6000)]
            cpu = cpu_s(server)
            track_done, track_elapsed, bad_track = await closed_loop(
                port, tracks, args.track_connections, seconds=args.track_seconds)
            track_rate = track_done / track_elapsed
            track_cpu = (cpu_s(server) - cpu) / track_done * 1e6

            latencies, bad_lat = await open_loop(port, args.rate, args.latency_seconds)
            expected = 50 * 100 + done * args.batch_size + track_done + len(latencies)
            landed = await on_topic(bootstrap, "bench.events", expected)
            raw_landed = await on_topic(bootstrap, "bench.raw", args.events)
            if stack:
                raw_landed = await on_topic(bootstrap, "bench.raw2", args.events)
        finally:
            for p in [proc, *stack]:
                p.terminate()
            for p in [proc, *stack]:
                p.wait(15)

    print(f"ingest bench: {os.cpu_count()} cores, Tansu broker, events ~"
          f"{len(orjson.dumps(next(calls('x'))))} bytes, each with its own messageId")
    beside = " with the idle stack beside" if stack else ""
    print(f"ceiling  raw aiokafka producer (acks=all)  {raw_rate:9,.0f} events/s     "
          f"cpu {raw_cpu:5.1f} us/event{beside}")
    if stack:
        print(f"         alone, before the stack started   {alone_rate:9,.0f} events/s")
    print(f"batch    /v1/batch x{args.batch_size}, {args.connections} conns     "
          f"{batch_rate:9,.0f} events/s     cpu {batch_cpu:5.1f} us/event   "
          f"ratio {batch_rate / raw_rate:.2f} of ceiling{beside} (target >= 0.50)   "
          f"non-200: {len(bad_batch)}")
    if stack:
        print(f"         ratio {batch_rate / alone_rate:.2f} of the ceiling alone; the idle "
              f"stack ({', '.join(IDLE)}) used {100 * stack_cpu / elapsed:.1f} % of one core "
              f"meanwhile")
    print(f"track    /v1/track, {args.track_connections} conns"
          f"{track_rate:21,.0f} requests/s   cpu {track_cpu:5.1f} us/request "
          f"(target >= 3,000/s)   non-200: {len(bad_track)}")
    print(f"latency  /v1/track at {args.rate}/s offered     p50 {pct(latencies, 50):6.1f} ms  "
          f"p99 {pct(latencies, 99):6.1f} ms  max {max(latencies):6.1f} ms "
          f"(target p99 < 25 ms)   non-200: {len(bad_lat)}")
    print(f"check    distinct events on the topic {landed:,} / accepted {expected:,}; "
          f"raw producer's {raw_landed:,} / {args.events:,}")


if __name__ == "__main__":
    parser = bench_options(__doc__, events=100_000, batch_size=100, connections=8,
                           track_seconds=8, track_connections=64, rate=1000, latency_seconds=10)
    parser.add_argument("--idle-stack", action="store_true",
                        help="run profile, journey and messaging idle beside ingest")
    parser.add_argument("--settle", type=int, default=60,
                        help="seconds the idle stack settles before measuring")
    asyncio.run(main(parser.parse_args()))
