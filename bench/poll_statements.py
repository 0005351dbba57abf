"""Round trips and statements to Postgres per polled batch of profile's consumer: a count.

Calls profile's events handler directly (no broker: the batch is what a poll hands it) on a
scratch database, with batches of 1 record (a new customer's identify, then the same
customer's track) and of 20 records (10 new customers' identify and track), after warm-up
batches of the same shapes (so the statement caches hold what a running consumer's hold).
Each socket write to Postgres is decoded as the frontend messages it carries (the wire
protocol: Query, Parse, Bind, Execute, Sync): a write is one round trip (the handler waits
for its answer before the next), an Execute or a Query is one statement, a Parse is one
statement prepared (parsed and planned) by the server. The outbox rows' publish after
commit goes to the broker, not here, and is not called; the relay's deletes of published
rows (one statement per 0.1 s for every publish, on its own connection) are not counted.

The counts are deterministic: the same on a loaded machine. `--cpu N` adds, over N more
batches of each shape, the CPU per batch of this process (the handler: resolution,
encoding, the driver) and of the database's Postgres backends (read from /proc: the server
must be local), and the wall time per handler call, which drift with the machine's load.
Compare two builds by running a copy of this file in the other tree (bench/_root.py puts
the tree of the script first on sys.path)::

    .venv/bin/python bench/poll_statements.py [--batches 5] [--verbose] [--cpu 200]
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import time
import uuid
from asyncio.selector_events import _SelectorSocketTransport
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from functools import partial
from types import SimpleNamespace
from typing import Any

import _root  # noqa: F401  (the repository root on sys.path: tests.support)

from shared.contracts.delivery import DeliveryEvent
from shared.contracts.events import Event
from shared.db import create_engine
from shared.db.migrate import upgrade_all
from shared.kafka import Record
from shared.settings import Settings
from tests.support.measure import process_cpu
from tests.support.postgres import postgres_server, scratch_database


class Wire:
    """Frontend messages of every socket write to the Postgres port, while `on`."""

    def __init__(self, port: int) -> None:
        self.on = False
        self.trips: list[list[tuple[str, str]]] = []  # per write: (message type, SQL)
        self._names: dict[bytes, str] = {}  # prepared statement name -> SQL
        original = _SelectorSocketTransport.write
        wire = self

        def write(transport: Any, data: Any) -> None:
            peer = transport.get_extra_info("peername")
            if wire.on and isinstance(peer, tuple) and peer[1] == port:
                wire.trips.append(wire._decode(bytes(data)))
            original(transport, data)

        _SelectorSocketTransport.write = write  # type: ignore[method-assign]

    def _decode(self, data: bytes) -> list[tuple[str, str]]:
        out, i = [], 0
        while i + 5 <= len(data):
            kind = chr(data[i])
            (length,) = struct.unpack_from("!i", data, i + 1)
            body = data[i + 5:i + 1 + length]
            i += 1 + length
            if kind == "Q":
                out.append(("Q", body.split(b"\0", 1)[0].decode()))
            elif kind == "P":
                name, sql = body.split(b"\0", 2)[:2]
                self._names[name] = sql.decode()
                out.append(("P", sql.decode()))
            elif kind == "B":
                name = body.split(b"\0", 2)[1]
                out.append(("B", self._names.get(name, "?")))
            elif kind in "ESDC":
                out.append((kind, ""))
        return out


def events(ws: str, first: int, customers: int) -> Iterator[Event]:
    """New customers' identify, then their track (customer by customer, as ingest would)."""
    now = datetime.now(UTC).isoformat()
    for c in range(first, first + customers):
        user = f"u{c}"
        base = {"workspace_id": ws, "user_id": user, "timestamp": now, "received_at": now}
        yield Event.model_validate(base | {
            "id": f"i{c}", "type": "identify",
            "traits": {"email": f"{user}@example.com", "plan": "pro"}})
        yield Event.model_validate(base | {
            "id": f"t{c}", "type": "track", "event": "Order Completed",
            "properties": {"revenue": 10.5}})


def records(items: list[Any]) -> list[Record]:
    return [Record(e, "events", 0, n, f"{e.workspace_id}:{e.profile_id}".encode()
                   if isinstance(e, DeliveryEvent)
                   else f"{e.workspace_id}:{e.customer}".encode(), None)
            for n, e in enumerate(items)]


def outcome(ws: str, profile_id: str) -> DeliveryEvent:
    """An email's `delivered` outcome for a known customer, as messaging reports it."""
    return DeliveryEvent.model_validate({
        "id": f"d-{uuid.uuid4().hex}", "workspace_id": ws, "profile_id": profile_id,
        "message_id": f"msg-{uuid.uuid4().hex}", "channel": "email", "status": "delivered",
        "occurred_at": datetime.now(UTC).isoformat()})


async def profile_of(engine: Any, ws: str, user: str) -> str:
    async with engine.connect() as conn:
        return str((await conn.exec_driver_sql(
            "SELECT profile_id FROM profile.identities WHERE workspace_id = $1 "
            "AND kind = 'user_id' AND value = $2", (ws, user))).scalar_one())


def poll_handler(rt: Any) -> Any:
    """What the consumer loop does with a poll of both topics: this build's joint handler
    (`handle_poll`), or, in a build without one, the two topics' handlers (two
    transactions; the loop runs them concurrently, counted here one after the other)."""
    from services.profile import handlers

    if hasattr(handlers, "handle_poll"):
        async def joint(events: list[Record], outcomes: list[Record]) -> None:
            await handlers.handle_poll(rt, {"profile.events": events,
                                            "profile.delivery-events": outcomes})
    else:
        async def joint(events: list[Record], outcomes: list[Record]) -> None:
            await handlers.handle_events(rt, events)
            await handlers.handle_delivery_events(rt, outcomes)
    return joint


def label(sql: str) -> str:
    words = " ".join(sql.split())
    return words[:70]



async def _backends(engine: Any) -> float:
    """CPU seconds so far of the Postgres backends of this database but the one asking."""
    async with engine.connect() as conn:
        pids = (await conn.exec_driver_sql(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()")).scalars().all()
    return sum(process_cpu(pid) for pid in pids)


async def run(url: str, batches: int, verbose: bool, cpu: int) -> None:
    from services.profile.handlers import handle_events

    settings = Settings(env="test", database_url=url, kafka_bootstrap="127.0.0.1:1",
                        topic_prefix=f"ps-{uuid.uuid4().hex[:6]}.")

    async def publish(rows: Any) -> None:  # the broker's part, not counted here
        return None

    rt: Any = SimpleNamespace(engine=create_engine(url), settings=settings, publish=publish)
    wire = Wire(int(url.rsplit(":", 1)[1].split("/")[0]))
    ws = f"ws-{uuid.uuid4().hex[:6]}"
    customer = 0
    shapes: list[tuple[str, int, Any]] = [
        ("1 (identify, new customer)", 1, 0), ("1 (track, known customer)", 1, 1),
        ("20 (10 new customers: identify, track)", 20, None),
        ("1 + 1 (an identify; an outcome, 2 topics)", 1, "joint")]
    joint = poll_handler(rt)
    probe = create_engine(url, pool_size=1)
    print(f"{'records per batch':<42} {'round trips':>12} {'statements':>11} {'prepared':>9}"
          + (f" {'ms CPU: handler':>16} {'Postgres':>9} {'ms wall':>8}" if cpu else ""))
    try:
        for name, size, pick in shapes:
            counts = []
            for n in range(batches + 2 + cpu):  # two warm-up batches
                if n == batches + 2:
                    spent = pg = wall = 0.0
                stream = list(events(ws, customer, max(size // 2, 1)))
                customer += max(size // 2, 1)
                if pick == "joint":  # a new customer's identify, and an outcome of the one
                    # before (known: it identified in the previous batch)
                    known = await profile_of(probe, ws, f"u{customer - 2}")
                    handle = partial(joint, records([stream[0]]),
                                     records([outcome(ws, known)]))
                else:
                    todo = [stream[pick]] if pick is not None else stream
                    handle = partial(handle_events, rt, records(todo))
                if pick == 1:  # the customer first identifies, in a batch of its own
                    await handle_events(rt, records([stream[0]]))
                if n >= batches + 2:  # CPU: the handler's batch only, not the identify before
                    pg0, cpu0 = await _backends(probe), time.process_time()
                    wall0 = time.perf_counter()
                    await handle()
                    wall += time.perf_counter() - wall0
                    spent += time.process_time() - cpu0
                    pg += await _backends(probe) - pg0
                    continue
                wire.on, wire.trips = True, []
                await handle()
                wire.on = False
                if n >= 2:
                    counts.append(list(wire.trips))
            trips = sum(len(c) for c in counts) / batches
            statements = sum(k in "EQ" for c in counts for t in c for k, _ in t) / batches
            prepared = sum(k == "P" for c in counts for t in c for k, _ in t) / batches
            line = f"{name:<42} {trips:>12.1f} {statements:>11.1f} {prepared:>9.1f}"
            if cpu:
                line += (f" {spent / cpu * 1e3:>16.2f} {pg / cpu * 1e3:>9.2f}"
                         f" {wall / cpu * 1e3:>8.2f}")
            print(line, flush=True)
            if verbose:
                for trip in counts[-1]:
                    sql = next((s for k, s in trip if k in "QPB" and s), "")
                    kinds = "".join(k for k, _ in trip)
                    print(f"    {kinds:<10} {label(sql)}")
    finally:
        await rt.engine.dispose()
        await probe.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=5, help="measured batches per shape")
    parser.add_argument("--cpu", type=int, default=0, help="batches per shape whose CPU is "
                        "measured (after the counted ones)")
    parser.add_argument("--verbose", action="store_true", help="each round trip of the last "
                        "batch of each shape: its messages and statement")
    args = parser.parse_args()
    with ExitStack() as stack:
        server = stack.enter_context(postgres_server())
        url = stack.enter_context(scratch_database(server))
        upgrade_all(url)
        asyncio.run(run(url, args.batches, args.verbose, args.cpu))


if __name__ == "__main__":
    main()
