"""CPU and wall time of one post-commit outbox publish of a small batch (what a handler pays
per poll at low rates). Starts Tansu and a scratch Postgres; each call first commits
`--rows` ProfileChanges through `add_to_outbox`, then times `relay.publish` of them.
Runs unchanged on builds whose `add_to_outbox` returns ids or rows.

    .venv/bin/python bench/outbox_relay.py [--calls 400] [--rows 2]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime

import _root  # noqa: F401  (the repository root on sys.path: tests.support)
from sqlalchemy import func, select

from services.profile.tables import outbox
from shared.contracts.envelope import message_key
from shared.contracts.profile import ProfileChange
from shared.db import OutboxRelay, add_to_outbox, create_engine
from shared.db.migrate import upgrade_all
from shared.kafka.admin import ensure_topics
from shared.kafka.producer import create_producer
from shared.settings import Settings
from tests.support.broker import tansu_broker
from tests.support.postgres import postgres_server, scratch_database

WARMUP = 50


async def run(settings: Settings, calls: int, per: int) -> None:
    await ensure_topics(settings)
    topic = settings.topic("profile-changes")
    engine = create_engine(settings.database_url)
    producer = create_producer(settings)
    await producer.start()
    relay = OutboxRelay(engine, outbox, producer, service="bench")
    cpu = wall = 0.0
    for i in range(calls + WARMUP):
        messages = [(message_key("w", f"p{j}"), ProfileChange(
            id=f"{i}-{j}", workspace_id="w", profile_id=f"p{j}", kind="traits_changed",
            data={"traits": ["plan"]}, occurred_at=datetime.now(UTC))) for j in range(per)]
        async with engine.begin() as conn:
            rows = await add_to_outbox(conn, outbox, topic, "profile-changes", messages)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await relay.publish(rows)
        if i >= WARMUP:
            cpu += time.process_time() - cpu0
            wall += time.perf_counter() - wall0
    async with engine.connect() as conn:
        left = (await conn.execute(select(func.count()).select_from(outbox))).scalar_one()
    await producer.stop()
    await engine.dispose()
    print(f"outbox publish of {per} rows after commit, {calls} calls: "
          f"this process's CPU {cpu / calls * 1e6:.0f} us, wall {wall / calls * 1e3:.2f} ms "
          f"per call; rows left in the outbox: {left}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--rows", type=int, default=2)
    args = parser.parse_args()
    with tansu_broker() as bootstrap, postgres_server() as server, \
            scratch_database(server) as url:
        upgrade_all(url)
        asyncio.run(run(Settings(env="test", database_url=url, kafka_bootstrap=bootstrap,
                                 topic_prefix="outbox-bench.", topic_partitions=3),
                        args.calls, args.rows))


if __name__ == "__main__":
    main()
