"""A consumer-group member for the recovery scenario: the real ConsumerLoop on a topic,
printing `commit <unix time>` after each commit. Run: python -m tests.reliability.member
<topic> <consumer name> (settings from TOUCHPOINT_* variables)."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from shared.contracts.events import Event
from shared.kafka import ConsumerLoop, ConsumerSpec, Record, create_producer
from shared.settings import Settings


class Loop(ConsumerLoop):
    async def _commit(self, consumer: Any, offsets: Any) -> None:
        await super()._commit(consumer, offsets)
        print("commit", time.time(), flush=True)  # noqa: T201 (read by the test)


async def main(topic: str, name: str) -> None:
    settings = Settings()

    async def handle(records: list[Record]) -> None:
        return None

    producer = create_producer(settings)
    await producer.start()
    print("started", time.time(), flush=True)  # noqa: T201
    await Loop(ConsumerSpec(name, topic, Event, handle), settings, producer).run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
