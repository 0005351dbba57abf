"""CPU per record of the ways to hand records to the producer, alternated, against Tansu:
`send()` per record (aiokafka's partitioner), `send()` with a precomputed partition, and
`shared.kafka.producer.send_batched` (create_batch() batches where a call has many records
for a partition). `--concurrent N` runs N calls at once, as a service's HTTP handlers,
consumers and sweeper do on their one producer.

    .venv/bin/python bench/produce.py [--rows 2,20,200] [--concurrent 1] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import _root  # noqa: F401  (the repository root on sys.path: tests.support)
from aiokafka import AIOKafkaProducer

from shared.contracts.envelope import message_key
from shared.kafka.admin import ensure_topics
from shared.kafka.codec import Headers
from shared.kafka.producer import create_producer, partition_for, send_batched
from shared.settings import Settings
from tests.support.broker import tansu_broker

VALUE = (b'{"id":"123-4","workspace_id":"w","profile_id":"p3","kind":"traits_changed",'
         b'"data":{"traits":["plan"]},"occurred_at":"2026-11-25T09:00:00.123456Z"}')
HEADERS: Headers = [("content-type", b"application/json"),
                    ("schema", b"profile-changes/v1"), ("message-id", b"123-4")]
Records = list[tuple[str, bytes, bytes, Headers]]


async def plain(producer: AIOKafkaProducer, records: Records) -> None:
    await asyncio.gather(*[await producer.send(t, v, key=k, headers=h)
                           for t, k, v, h in records])


async def with_partition(producer: AIOKafkaProducer, records: Records) -> None:
    ids = sorted(await producer.partitions_for(records[0][0]))
    await asyncio.gather(*[await producer.send(t, v, key=k, partition=partition_for(k, ids),
                                               headers=h) for t, k, v, h in records])


async def batched(producer: AIOKafkaProducer, records: Records) -> None:
    await asyncio.gather(*await send_batched(producer, list(records)))


VARIANTS: dict[str, Callable[[AIOKafkaProducer, Records], Awaitable[None]]] = {
    "send": plain, "send(partition=)": with_partition, "send_batched": batched}


async def run(settings: Settings, sizes: list[int], concurrent: int, rounds: int) -> None:
    await ensure_topics(settings)
    topic = settings.topic("profile-changes")
    producer = create_producer(settings)
    await producer.start()

    def records(n: int, call: int) -> Records:
        return [(topic, message_key("w", f"p{(call * n + j) % 500}"), VALUE, HEADERS)
                for j in range(n)]

    for n in sizes:
        calls = max(20, 4000 // (n * concurrent))
        cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
        wall: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for _ in range(rounds):
            for name, variant in VARIANTS.items():
                for i in range(5):  # warm-up
                    await asyncio.gather(*(variant(producer, records(n, i))
                                           for _ in range(concurrent)))
                cpu0, wall0 = time.process_time(), time.perf_counter()
                for i in range(calls):
                    await asyncio.gather(*(variant(producer, records(n, i * concurrent + c))
                                           for c in range(concurrent)))
                cpu[name].append((time.process_time() - cpu0) / (calls * n * concurrent))
                wall[name].append((time.perf_counter() - wall0) / calls)
        for name in VARIANTS:
            print(f"{n} records a call, {concurrent} at once, {name:17s} CPU us/record "
                  + " ".join(f"{c * 1e6:6.1f}" for c in cpu[name])
                  + "  wall ms per round " + " ".join(f"{w * 1e3:6.2f}" for w in wall[name]))
    await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="2,20,200")
    parser.add_argument("--concurrent", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    with tansu_broker() as bootstrap:
        asyncio.run(run(Settings(env="test", kafka_bootstrap=bootstrap,
                                 topic_prefix="produce-bench.", topic_partitions=3),
                        [int(n) for n in args.rows.split(",")], args.concurrent, args.rounds))


if __name__ == "__main__":
    main()
