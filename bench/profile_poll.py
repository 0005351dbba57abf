"""Profile's consumer handler alone: wall time of `handle_poll` per poll, and the process's
CPU per poll including the outbox publish (drained before the clock stops).

Real Postgres (a scratch database) and a real Tansu broker, as the tests start them; each
poll is `--events` new customers' identify and track. Runs unchanged on any build whose
`services.profile.handlers.handle_poll` takes (rt, {consumer: records}):

    .venv/bin/python bench/profile_poll.py --polls 300 --events 10
    cd /tmp/main && PYTHONPATH=/tmp/main <wt>/.venv/bin/python <wt>/bench/profile_poll.py
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime

from services.profile import tables
from services.profile.handlers import EVENTS, handle_poll
from shared.contracts.events import Event
from shared.db.migrate import upgrade_all
from shared.kafka import Record
from shared.kafka.admin import ensure_topics
from shared.runtime import ServiceParts, ServiceRuntime
from shared.settings import Settings
from tests.support.broker import tansu_broker
from tests.support.postgres import postgres_server, scratch_database

T0 = datetime(2026, 11, 2, tzinfo=UTC)


def events(ws: str, n: int) -> list[Event]:
    out = []
    for _ in range(n // 2):
        user = uuid.uuid4().hex[:12]
        for kind, extra in (("identify", {"traits": {"email": f"{user}@example.com"}}),
                            ("track", {"event": "Signed Up"})):
            out.append(Event.model_validate({
                "id": f"e-{uuid.uuid4().hex}", "workspace_id": ws, "type": kind,
                "user_id": user, "timestamp": T0, "received_at": T0, **extra}))
    return out


async def main(args: argparse.Namespace, bootstrap: str, url: str) -> None:
    settings = Settings(env="test", database_url=url, kafka_bootstrap=bootstrap,
                        topic_prefix=f"bench-{uuid.uuid4().hex[:8]}.", topic_partitions=6)
    await ensure_topics(settings)
    rt = ServiceRuntime(ServiceParts("profile", tables.api_keys, outbox=tables.outbox), settings)
    await rt.producer.start()
    rt.producer_started = True
    ws, offset, walls = f"bench-{uuid.uuid4().hex[:6]}", 0, []
    try:
        for n in range(args.warmup + args.polls):
            if n == args.warmup:
                cpu0, t0 = time.process_time(), time.perf_counter()
            batch = events(ws, args.events)
            records = [Record(e, "events", 0, offset + i, None, None)
                       for i, e in enumerate(batch)]
            offset += len(batch)
            start = time.perf_counter()
            await handle_poll(rt, {EVENTS: records})
            if n >= args.warmup:
                walls.append(time.perf_counter() - start)
        if rt.relay is not None and hasattr(rt.relay, "drain"):
            await rt.relay.drain()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    finally:
        await rt.producer.stop()
        if rt.relay is not None:
            await rt.relay.close()
        await rt.engine.dispose()
    walls.sort()
    p99 = walls[int(0.99 * len(walls))]
    print(f"{args.polls} polls of {args.events} events: handle_poll wall p50 "
          f"{1000 * statistics.median(walls):.2f} ms, p99 {1000 * p99:.2f} ms; "
          f"CPU per poll {1000 * cpu / args.polls:.2f} ms (publish included); "
          f"{args.polls / wall:.0f} polls/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--polls", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--events", type=int, default=10)
    a = parser.parse_args()
    with tansu_broker() as bootstrap, postgres_server() as server, \
            scratch_database(server) as url:
        upgrade_all(url)
        asyncio.run(main(a, bootstrap, url))
