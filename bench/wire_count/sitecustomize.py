"""Round trips to Postgres per consumer poll, counted inside the services of a bench run.

Python imports `sitecustomize` at start-up from the first folder of sys.path that has one:
bench/stack_round_trips.py puts this folder on the PYTHONPATH of `bench/pipeline.py`, whose
service processes inherit it. With `WIRE_COUNT_DIR` set, each process that runs a consumer
loop counts the socket writes to the Postgres port (one per statement or round trip) made
while `ConsumerLoop._process` handles a poll (the handlers' transactions; a background
worker's statement in that window counts too), keyed by consumer, topics and records per
poll, and writes the totals to `$WIRE_COUNT_DIR/<pid>.json` at most once a second.
Without the variable nothing is patched; with it the services run on asyncio's own event
loop instead of uvloop (whose transports cannot be counted), so read no CPU figure of a
counted run.
"""

from __future__ import annotations

import os
from typing import Any


def _install(out_dir: str) -> None:
    import atexit
    import json
    import time
    from asyncio.selector_events import _SelectorSocketTransport

    from shared.kafka.consumer import ConsumerLoop

    state = {"inside": 0, "writes": 0}
    ports: set[int] = set()
    stats: dict[str, list[int]] = {}
    dumped = [0.0]
    write = _SelectorSocketTransport.write
    process = ConsumerLoop._process

    def counted_write(transport: Any, data: Any) -> None:
        if state["inside"]:
            peer = transport.get_extra_info("peername")
            if isinstance(peer, tuple) and peer[1] in ports:
                state["writes"] += 1
        write(transport, data)

    async def counted_process(loop: Any, consumer: Any, batches: Any) -> None:
        if not ports:
            ports.add(int(loop.settings.database_url.rsplit(":", 1)[1].split("/")[0]))
        prefix = loop.settings.topic_prefix
        topics = "+".join(sorted({tp.topic.removeprefix(prefix) for tp in batches}))
        records = sum(len(m) for m in batches.values())
        state["inside"] += 1
        before = state["writes"]
        try:
            await process(loop, consumer, batches)
        finally:
            state["inside"] -= 1
            row = stats.setdefault(f"{loop.name}\t{topics}\t{records}", [0, 0])
            row[0] += 1
            row[1] += state["writes"] - before
            if time.monotonic() - dumped[0] > 1:
                dump()

    def dump() -> None:
        dumped[0] = time.monotonic()
        if stats:
            with open(os.path.join(out_dir, f"{os.getpid()}.json"), "w") as f:
                json.dump(stats, f)

    _SelectorSocketTransport.write = counted_write  # type: ignore[method-assign]
    ConsumerLoop._process = counted_process  # type: ignore[method-assign]
    atexit.register(dump)  # a stopped service's last second


if os.environ.get("WIRE_COUNT_DIR"):
    # uvloop's transports are C: no write to count. uvicorn's "auto" loop falls back to
    # asyncio's when uvloop cannot be imported, so the counted run's CPU is not uvloop's.
    import sys

    sys.modules["uvloop"] = None  # type: ignore[assignment]
    try:
        _install(os.environ["WIRE_COUNT_DIR"])
    except ImportError:  # a process without the project on its path (a load tool)
        pass
