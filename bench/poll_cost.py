"""CPU per polled batch of a service's consumer, at small and large batch sizes.

Starts Tansu and a scratch Postgres, then runs the whole service runtime (its consumer,
workers and outbox relay, as `create_app`'s lifespan starts them) in this process. A
child process produces the input in rounds of `B` records (new customers' identify, then
track) and waits until this process has handled each round, so every poll sees what a
quiet stack sees: a fetch that brings a round, then a handler call, then a commit. Printed
per batch size: records per poll, the CPU this process spent inside the consumer's poll
handling (`ConsumerLoop._process`: parse, handler, outbox publish, commit) per poll, and
the CPU of the whole process per poll over the rounds (fetches, heartbeats and the idle
fetch polls while the child produces included), beside the idle CPU of this process and
of the broker (Tansu answering this one consumer's fetch polls) over 5 s without input;
and the socket writes to Postgres and to the broker per poll (statements, requests).

`--stream 30` produces the rounds at 30 a second without waiting for each to be handled:
a steady flow, where commits and deletes that are batched over time show per poll.

CPU time, not wall time: on a loaded machine it stays close to what the code costs.
`--profile` adds cProfile's view (CPU clock) of each size's rounds, sorted by
`POLL_COST_SORT` (cumtime) and filtered by `POLL_COST_FILTER` (a regex; `-` prints
none), and the Python function calls per poll. Compare two builds by pointing PYTHONPATH
at the other tree::

    .venv/bin/python bench/poll_cost.py [--service profile] [--rounds 200] [--sizes 1,3,100]
                                        [--stream 30]
    cd /tmp/base && PYTHONPATH=/tmp/base /work/wt/throughput/.venv/bin/python \
        /work/wt/throughput/bench/poll_cost.py
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import multiprocessing as mp
import os
import sys
import time
import uuid
from asyncio.selector_events import _SelectorSocketTransport
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import _root  # noqa: F401  (the repository root on sys.path: tests.support)
import orjson
import psutil

from shared.db.migrate import upgrade_all
from shared.kafka import ConsumerLoop
from shared.kafka.admin import ensure_topics
from shared.settings import Settings
from tests.support.broker import tansu_broker
from tests.support.postgres import postgres_server, scratch_database

INPUT = {"profile": "events"}


class Counter:
    """Polls, records and CPU inside `ConsumerLoop._process`, whichever build runs; and the
    socket writes of the whole process per peer port (a request or a round trip each)."""

    def __init__(self) -> None:
        self.polls = self.records = 0
        self.cpu = 0.0
        self.writes: dict[int, int] = {}
        original = ConsumerLoop._process
        write = _SelectorSocketTransport.write
        writes = self.writes

        def counted_write(transport: Any, data: Any) -> None:
            peer = transport.get_extra_info("peername")
            port = peer[1] if isinstance(peer, tuple) else 0
            writes[port] = writes.get(port, 0) + 1
            write(transport, data)

        _SelectorSocketTransport.write = counted_write  # type: ignore[method-assign]

        async def counted(loop: Any, consumer: Any, batches: Any) -> None:
            cpu0 = time.process_time()
            await original(loop, consumer, batches)
            self.cpu += time.process_time() - cpu0
            self.polls += 1
            self.records += sum(len(m) for m in batches.values())

        ConsumerLoop._process = counted  # type: ignore[method-assign]


def events(workspace: str, n: int) -> Iterator[tuple[bytes, bytes]]:
    """(key, value): customer i's identify, then customer i's track, and so on."""
    now = datetime.now(UTC).isoformat()
    for i in range(n):
        user = f"u{i // 2}"
        base = {"id": f"e{i}", "workspace_id": workspace, "user_id": user, "timestamp": now,
                "received_at": now}
        if i % 2 == 0:
            base |= {"type": "identify", "traits": {"email": f"{user}@example.com",
                                                     "plan": "pro"}}
        else:
            base |= {"type": "track", "event": "Order Completed",
                     "properties": {"revenue": 10.5}}
        yield f"{workspace}:{user}".encode(), orjson.dumps(base)


def producer_main(bootstrap: str, topic: str, workspace: str, size: int, rounds: int,
                  conn: Connection) -> None:
    """Child process: on each word from the parent, produce the next round and flush."""
    from aiokafka import AIOKafkaProducer

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        await producer.start()
        stream = events(workspace, size * rounds)
        loop = asyncio.get_running_loop()
        try:
            while await loop.run_in_executor(None, conn.recv):
                for _ in range(size):
                    key, value = next(stream)
                    await producer.send(topic, value, key=key)
                await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(run())


async def measure(service: str, settings: Settings, size: int, rounds: int,
                  counter: Counter, profile: bool = False, stream: float = 0.0
                  ) -> dict[str, float]:
    await ensure_topics(settings)
    app = _create_app(service, settings)
    workspace = f"ws-{uuid.uuid4().hex[:6]}"
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(
        target=producer_main, args=(settings.kafka_bootstrap, settings.topic(INPUT[service]),
                                    workspace, size, rounds, child), daemon=True)
    proc.start()
    async with app.router.lifespan_context(app):
        rt = app.state.runtime
        while not rt.loops or not all(loop.running for loop in rt.loops):
            await asyncio.sleep(0.05)
        await asyncio.sleep(3)  # the group joined, the first idle fetches done
        children = [c for c in psutil.Process().children(recursive=True) if c.pid != proc.pid]
        cpu0, wall0, broker0 = time.process_time(), time.perf_counter(), _cpu(children)
        await asyncio.sleep(5)
        idle = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
        broker_idle = (_cpu(children) - broker0) / (time.perf_counter() - wall0)
        polls0, records0, inside0 = counter.polls, counter.records, counter.cpu
        writes0 = dict(counter.writes)
        profiler = _cprofile().Profile(time.process_time) if profile else None
        if profiler:
            profiler.enable()
        cpu0 = time.process_time()
        start = time.perf_counter()
        for i in range(rounds):
            parent.send(True)
            if stream:  # the next round at its time, whether this one was handled or not
                await asyncio.sleep(max(start + (i + 1) / stream - time.perf_counter(), 0))
                continue
            deadline = time.perf_counter() + 30
            while counter.records - records0 < (i + 1) * size:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"round {i} not handled within 30 s")
                await asyncio.sleep(0.001)
        deadline = time.perf_counter() + 60
        while counter.records - records0 < rounds * size:
            if time.perf_counter() > deadline:
                raise TimeoutError("the rounds were not handled within 60 s")
            await asyncio.sleep(0.001)
        if stream:
            await asyncio.sleep(0.5)  # the commits and deletes that follow the last poll
        total = time.process_time() - cpu0
        if profiler:
            profiler.disable()
            stats = importlib.import_module("pstats").Stats(profiler)
            stats.sort_stats(os.environ.get("POLL_COST_SORT", "cumtime"))
            if (only := os.environ.get("POLL_COST_FILTER")) != "-":
                stats.print_stats(only or "", 45)
            # A count, not a time: the same on a loaded machine (what callgrind would give).
            print(f"size {size}: {stats.total_calls / max(counter.polls - polls0, 1):.0f} "
                  "Python function calls per poll, whole process", flush=True)
    parent.send(False)
    proc.join(10)
    polls = counter.polls - polls0
    pg_port = int(settings.database_url.rsplit(":", 1)[1].split("/")[0])
    kafka_port = int(settings.kafka_bootstrap.rsplit(":", 1)[1])

    def sent(port: int) -> float:
        return (counter.writes.get(port, 0) - writes0.get(port, 0)) / polls

    return {"pg": sent(pg_port), "kafka": sent(kafka_port),
            "size": size, "polls": polls, "per_poll": (counter.records - records0) / polls,
            "inside_ms": (counter.cpu - inside0) / polls * 1e3, "process_ms": total / polls * 1e3,
            "idle_pct": idle * 100, "broker_idle_pct": broker_idle * 100}


def _cpu(processes: list[psutil.Process]) -> float:
    total = 0.0
    for p in processes:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _cprofile() -> Any:
    """cProfile, although bench/profile.py (first on sys.path here) shadows `profile`."""
    here = str(Path(__file__).resolve().parent)
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != here]
    try:
        return importlib.import_module("cProfile")
    finally:
        sys.path[:] = saved


def _create_app(service: str, settings: Settings) -> Any:
    if service == "profile":
        from services.profile.app import create_app
        return create_app(settings)
    raise SystemExit(f"unknown service {service}")


async def run_sizes(args: argparse.Namespace, bootstrap: str, url: str) -> None:
    counter = Counter()
    print(f"{args.service}: CPU per poll (ms), {args.rounds} rounds per size (fewer for "
          "large ones)")
    print(f"{'records':>8} {'polls':>6} {'rec/poll':>9} {'in _process':>12} "
          f"{'whole process':>14} {'idle % core':>12} {'Tansu idle %':>13} {'pg writes':>10} "
          f"{'kafka writes':>13}")
    for size in (int(s) for s in args.sizes.split(",")):
        settings = Settings(env="test", database_url=url, kafka_bootstrap=bootstrap,
                            topic_prefix=f"pc{size}-{uuid.uuid4().hex[:6]}.",
                            topic_partitions=3)
        rounds = max(args.rounds // max(size // 10, 1), 5)
        r = await measure(args.service, settings, size, rounds, counter, args.profile,
                          args.stream)
        print(f"{size:>8} {r['polls']:>6} {r['per_poll']:>9.1f} {r['inside_ms']:>12.2f} "
              f"{r['process_ms']:>14.2f} {r['idle_pct']:>12.1f} {r['broker_idle_pct']:>13.1f} "
              f"{r['pg']:>10.1f} "
              f"{r['kafka']:>13.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--service", default="profile", choices=sorted(INPUT))
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--sizes", default="1,3,100")
    parser.add_argument("--stream", type=float, default=0.0,
                        help="rounds per second, each produced at its time without waiting "
                             "for the one before (a steady flow); 0: one round at a time")
    parser.add_argument("--profile", action="store_true",
                        help="print cProfile's top functions of each size's rounds")
    args = parser.parse_args()
    with ExitStack() as stack:
        bootstrap = stack.enter_context(tansu_broker())
        server = stack.enter_context(postgres_server())
        url = stack.enter_context(scratch_database(server))
        upgrade_all(url)
        asyncio.run(run_sizes(args, bootstrap, url))


if __name__ == "__main__":
    main()
