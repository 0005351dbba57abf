"""Round trips and statements to Postgres per polled batch of journey's and messaging's
consumers: a count, not a time, so it is the same on a loaded machine.

Runs the handlers themselves (the functions a `ConsumerLoop` calls with a poll's records)
against a scratch Postgres, and reads what the process writes to Postgres off the socket
(the frontend protocol's messages; nothing in the services is changed or wrapped): every
Sync, simple Query and CopyDone is a round trip (the client waits for the server), every
Execute or simple Query a statement, labelled by its verb and the tables it names. Also
printed, per batch: the CPU of the database's Postgres backends and of this process (the
handler; for messaging also the SMTP sink's thread): times, which vary with the machine's
load (and Postgres's in steps of its 10 ms clock ticks: use many batches); the counts
do not.

Scenarios, each after warm-up batches (the per-connection prepared statements, the
parsed journey documents and the channel configuration are in place, as in a running
service), averaged over `--batches` batches per size:
- `journey.profile-events`: N new customers' tracks, each entering one of 10 published
  journeys with an email cap (so the cap's advisory locks and past sends are read), a send
  and a one-day wait; no contact policy (the default);
- `journey.profile-changes`: N `traits_changed` for those customers (no journey enters on
  them: the inbox claim, the loads and the decisions);
- `messaging.send-commands`: N emails to N customers through an SMTP sink (aiosmtpd in
  this process): send state, claim, `sending` marks, outcomes and delivery events.

    .venv/bin/python bench/round_trips.py [--sizes 1,20] [--batches 5] [--statements]

`--statements` prints each scenario's statements per batch by label (the one-record
batch's, then the largest's). Compare two builds by pointing PYTHONPATH at the other
tree (`cd /tmp/base && PYTHONPATH=/tmp/base .venv/bin/python <this tree>/bench/...`).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import struct
import time
import uuid
from asyncio.selector_events import _SelectorSocketTransport
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import _root  # noqa: F401  (the repository root on sys.path: tests.support)
import asyncpg
import orjson
import psutil
from journey import journey as journey_document  # bench/journey.py's ten journeys

from shared.db.engine import create_engine
from shared.db.migrate import upgrade_all
from shared.settings import Settings
from tests.support.postgres import postgres_server, scratch_database
from tests.support.smtp import Inbox, serve_smtp

WS = "rt"
# consumer -> records per batch -> (round trips, statements, statements by label,
# Postgres CPU s, process CPU s), per batch
Results = dict[str, dict[int, tuple[float, float, Counter[str], float, float]]]
_TABLE = re.compile(r'"?(journey|messaging)"?\."?(\w+)"?')
_VERB = re.compile(r"^\s*(\w+)")


def label(sql: str) -> str:
    verb = (_VERB.match(sql) or [None, "?"])[1].upper()
    tables = list(dict.fromkeys(f"{m[1]}.{m[2]}" for m in _TABLE.finditer(sql)))
    return f"{verb} {'+'.join(tables)}".strip()


class Wire:
    """Reads the frontend protocol off every write to Postgres's port."""

    def __init__(self, port: int, database: str) -> None:
        self.port, self.database = port, database
        self.trips = 0
        self.statements: Counter[str] = Counter()
        self._names: dict[str, str] = {}  # prepared statement name -> SQL
        self._bound = ""
        write = _SelectorSocketTransport.write
        wire = self

        def traced(transport: Any, data: Any) -> None:
            peer = transport.get_extra_info("peername")
            if isinstance(peer, tuple) and peer[1] == wire.port:
                wire.read(bytes(data))
            write(transport, data)

        _SelectorSocketTransport.write = traced  # type: ignore[method-assign]

    def read(self, data: bytes) -> None:
        at = 0
        while at + 5 <= len(data):
            kind = chr(data[at])
            (length,) = struct.unpack("!i", data[at + 1:at + 5])
            if length < 4 or not kind.isalpha():
                return  # a startup packet or the middle of a COPY's data: not a message
            body = data[at + 5:at + 1 + length]
            at += 1 + length
            if kind == "Q":
                sql = body.split(b"\0", 1)[0].decode()
                self.trips += 1
                self.statements[label(sql)] += 1
            elif kind == "P":
                name, sql = body.split(b"\0")[:2]
                self._names[name.decode()] = sql.decode()
                self._bound = sql.decode()
            elif kind == "B":
                _portal, name = body.split(b"\0")[:2]
                self._bound = self._names.get(name.decode(), self._bound)
            elif kind == "E":
                self.statements[label(self._bound)] += 1
            elif kind in "Sc":
                self.trips += 1


def backends_cpu(database: str) -> float:
    """CPU seconds so far of this database's Postgres backends (their process titles name
    it): what the statements cost the server."""
    total = 0.0
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(database in part for part in proc.info["cmdline"] or []):
                t = proc.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            pass
    return total


async def count(wire: Wire, batches: int, run: Callable[[int], Awaitable[None]]
                ) -> tuple[float, float, Counter[str], float, float]:
    trips0, statements0 = wire.trips, wire.statements.copy()
    pg0, cpu0 = backends_cpu(wire.database), time.process_time()
    for n in range(batches):
        await run(n)
    done = wire.statements - statements0
    return ((wire.trips - trips0) / batches, sum(done.values()) / batches, done,
            (backends_cpu(wire.database) - pg0) / batches,
            (time.process_time() - cpu0) / batches)


def record(value: Any) -> Any:
    return SimpleNamespace(value=value, topic="t", partition=0, offset=0, key=None, raw=None)


async def journey_setup(url: str) -> None:
    from services.journey.domain.document import JourneyDocument

    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        for k in range(10):
            doc = JourneyDocument.model_validate(journey_document(k)).model_dump(
                mode="json", by_alias=True, exclude_none=True)
            await conn.execute(
                "INSERT INTO journey.journeys (workspace_id, key, name, status, "
                "published_version) VALUES ($1, $2, $3, 'published', 1)", WS, doc["key"],
                doc["name"])
            await conn.execute(
                "INSERT INTO journey.journey_versions (workspace_id, key, version, document) "
                "VALUES ($1, $2, 1, $3::jsonb)", WS, doc["key"], orjson.dumps(doc).decode())
    finally:
        await conn.close()


async def journey_scenarios(url: str, wire: Wire, sizes: list[int], batches: int
                            ) -> Results:
    from services.journey.handlers import handle_profile_changes, handle_profile_events
    from services.journey.store import Documents
    from shared.clock import SystemClock
    from shared.contracts.profile import ChangeKind, ProfileChange, ProfileEvent

    await journey_setup(url)
    settings = Settings(env="test", database_url=url, kafka_bootstrap="127.0.0.1:1")
    rt = SimpleNamespace(engine=create_engine(url), settings=settings, parts=None)
    clock, docs = SystemClock(), Documents()
    customers: list[str] = []

    def event(pid: str, n: int) -> ProfileEvent:
        now = datetime.now(UTC).isoformat()
        eid = f"ev-{uuid.uuid4().hex}"
        return ProfileEvent.model_validate({
            "id": eid, "workspace_id": WS, "profile_id": pid,
            "profile": {"profile_id": pid, "user_id": f"u{pid}", "email": f"{pid}@rt.test",
                        "timezone": "UTC", "traits": {"plan": "pro"}},
            "event": {"id": eid, "workspace_id": WS, "type": "track", "event": f"E{n % 10}",
                      "user_id": f"u{pid}", "properties": {"order_id": f"o{eid}", "total": 42},
                      "timestamp": now, "received_at": now}})

    def change(pid: str) -> ProfileChange:
        return ProfileChange.model_validate({
            "id": f"ch-{uuid.uuid4().hex}", "workspace_id": WS, "profile_id": pid,
            "kind": ChangeKind.traits_changed.value, "occurred_at": datetime.now(UTC),
            "data": {"traits": {"plan": "team"}},
            "profile": {"profile_id": pid, "user_id": f"u{pid}", "email": f"{pid}@rt.test",
                        "timezone": "UTC", "traits": {"plan": "team"}}})

    async def events(size: int) -> None:
        fresh = [f"p{uuid.uuid4().hex[:12]}" for _ in range(size)]
        customers.extend(fresh)
        await handle_profile_events(rt, clock, docs, None,  # type: ignore[arg-type]
                                    [record(event(p, n)) for n, p in enumerate(fresh)])

    async def changes(size: int) -> None:
        await handle_profile_changes(rt, clock, docs, None,  # type: ignore[arg-type]
                                     [record(change(p)) for p in customers[-size:]])

    async def both(size: int) -> None:
        """A poll of both topics: `size` new customers' events and `size` changes of known
        ones. This build's joint handler (one transaction), or in a build without one the
        two topics' handlers (two; the loop runs them concurrently, here in turn)."""
        from services.journey import handlers

        fresh = [f"p{uuid.uuid4().hex[:12]}" for _ in range(size)]
        polled = {"journey.profile-events": [record(event(p, n)) for n, p in enumerate(fresh)],
                  "journey.profile-changes": [record(change(p)) for p in customers[-size:]]}
        customers.extend(fresh)
        if hasattr(handlers, "handle_poll"):
            await handlers.handle_poll(rt, clock, docs, None, polled)  # type: ignore[arg-type]
        else:
            await handle_profile_events(rt, clock, docs, None,  # type: ignore[arg-type]
                                        polled["journey.profile-events"])
            await handle_profile_changes(rt, clock, docs, None,  # type: ignore[arg-type]
                                         polled["journey.profile-changes"])

    out: Results = {}
    for name, run in (("journey.profile-events", events), ("journey.profile-changes", changes),
                      ("journey.both (1 poll)", both)):
        for size in sizes:
            for _ in range(3):  # warm-up: prepared statements, parsed documents
                await run(size)
            out.setdefault(name, {})[size] = await count(wire, batches,
                                                         lambda _n, s=size, r=run: r(s))
    async with rt.engine.connect() as conn:  # what the batches did, to be sure they did it
        got = (await conn.exec_driver_sql(
            "SELECT (SELECT count(*) FROM journey.instances), "
            "(SELECT count(*) FROM journey.decisions), (SELECT count(*) FROM journey.sends), "
            "(SELECT count(*) FROM journey.outbox)")).one()
    await rt.engine.dispose()
    print("journey: instances, decisions, sends, outbox rows:", tuple(got))
    return out


async def messaging_scenarios(url: str, smtp: str, wire: Wire, sizes: list[int],
                              batches: int
                              ) -> Results:
    from services.messaging.handlers import handle_send_commands
    from services.messaging.parts import Messaging
    from services.messaging.settings import MessagingSettings
    from services.messaging.store.templates import save_template
    from shared.contracts.send import Channel, Recipient, SendCommand

    settings = MessagingSettings(env="test", database_url=url, kafka_bootstrap="127.0.0.1:1",
                                 smtp_url=smtp)
    engine = create_engine(url)
    async with engine.begin() as conn:
        await save_template(conn, workspace_id=WS, key="welcome", values={
            "channel": "email", "category": "transactional",
            "subject": "Hi {{ profile.first_name }}",
            "html": "<p>Welcome, {{ profile.first_name }}</p>", "text": None})
    rt = SimpleNamespace(engine=engine, settings=settings, publish_soon=lambda rows: None)
    m = Messaging(settings)

    def command(pid: str) -> SendCommand:
        key = f"rt-{uuid.uuid4().hex}"
        return SendCommand(id=key, workspace_id=WS, profile_id=pid, idempotency_key=key,
                           channel=Channel.email, template="welcome",
                           to=Recipient(email=f"{pid}@rt.test"),
                           context={"profile": {"first_name": "Ada"}},
                           requested_at=datetime.now(UTC))

    async def send(size: int) -> None:
        await handle_send_commands(rt, m, [  # type: ignore[arg-type]
            record(command(f"p{uuid.uuid4().hex[:12]}")) for _ in range(size)])

    out: Results = {}
    for size in sizes:
        for _ in range(3):
            await send(size)
        out.setdefault("messaging.send-commands", {})[size] = await count(
            wire, batches, lambda _n, s=size: send(s))
    await m.close()
    async with engine.connect() as conn:  # what the batches did, to be sure they did it
        got = (await conn.exec_driver_sql(
            "SELECT status, count(*) FROM messaging.messages GROUP BY 1")).all()
    await engine.dispose()
    print("messaging: messages by status:", dict(got))  # type: ignore[arg-type]
    return out


async def main_async(args: argparse.Namespace, url: str, smtp: str) -> None:
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    wire = Wire(port, url.rsplit("/", 1)[1])
    sizes = [int(s) for s in args.sizes.split(",")]
    results = await journey_scenarios(url, wire, sizes, args.batches)
    results |= await messaging_scenarios(url, smtp, wire, sizes, args.batches)
    print(f"{'consumer':<26} {'records':>8} {'round trips':>12} {'statements':>11} "
          f"{'Postgres ms':>12} {'process ms':>11}")
    for name, by_size in results.items():
        for size, (trips, statements, _, pg, cpu) in by_size.items():
            print(f"{name:<26} {size:>8} {trips:>12.1f} {statements:>11.1f} {pg * 1e3:>12.2f} "
                  f"{cpu * 1e3:>11.2f}")
    if args.statements:
        for name, by_size in results.items():
            for size in (min(by_size), max(by_size)):
                print(f"\n{name}, {size} record(s) per batch, statements per batch:")
                for what, n in sorted(by_size[size][2].items()):
                    print(f"  {n / args.batches:6.1f}  {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", default="1,20")
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--statements", action="store_true")
    args = parser.parse_args()
    with ExitStack() as stack:
        server = stack.enter_context(postgres_server())
        url = stack.enter_context(scratch_database(server))
        upgrade_all(url)
        smtp = stack.enter_context(serve_smtp(Inbox()))
        asyncio.run(main_async(args, url, smtp))


if __name__ == "__main__":
    main()
