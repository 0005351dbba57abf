"""The fault suite's harness: recording providers, service subprocesses, reconciliation.

Every send is tagged (its idempotency key carries the scenario's run id), every delivery
attempt is counted at a recording SMTP server or a recording HTTP provider, and
`reconcile` compares what was accepted with what Postgres and the sinks hold.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from fastapi import FastAPI, Request, Response
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from services.journey.tables import api_keys as journey_keys
from services.messaging.tables import messages
from services.profile.tables import events, profiles
from shared.auth import hash_key, new_key
from shared.contracts.envelope import message_key
from shared.contracts.events import Event, EventType
from shared.contracts.profile import ProfileEvent, ProfileSnapshot
from shared.contracts.send import Channel, Recipient, SendCommand
from shared.db import create_engine
from shared.kafka import create_producer, publish
from shared.kafka.admin import ensure_topics
from shared.settings import Settings
from tests.support.net import free_port
from tests.support.processes import kill as kill  # re-exported for the scenarios
from tests.support.processes import serve as support_serve
from tests.support.ready import ready as ready  # re-exported for the scenarios
from tests.support.smtp import serve_smtp

SOAK = os.environ.get("TOUCHPOINT_SOAK") == "1"
ROUNDS = int(os.environ.get("TOUCHPOINT_SOAK_ROUNDS", "3")) if SOAK else 1


class RecordingSmtp:
    """An SMTP server that counts every attempt. `rcpt[address]` answers RCPT with a code;
    `data[address]` is a list of DATA answers used in turn (the last one repeats); `on_data`
    runs before each answer (a scenario kills a process there)."""

    def __init__(self) -> None:
        self.rcpt: dict[str, int] = {}
        self.data: dict[str, list[int]] = {}
        self.attempts: Counter[str] = Counter()  # DATA commands per address
        self.delivered: Counter[str] = Counter()  # X-Touchpoint-Message ids answered 250
        self.received: Counter[str] = Counter()  # ids whose DATA reached us, whatever answer
        self.on_data: Callable[[int], None] | None = None
        self.delay = 0.0

    async def handle_RCPT(self, _server: Any, _session: Any, envelope: Any,  # noqa: N802
                          address: str, _options: Any) -> str:
        code = self.rcpt.get(address, 250)
        if code != 250:
            return f"{code} scripted refusal"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802
        mail = message_from_bytes(envelope.content, policy=policy.default)
        mid = str(mail["X-Touchpoint-Message"])
        to = envelope.rcpt_tos[0]
        self.attempts[to] += 1
        self.received[mid] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.on_data is not None:
            self.on_data(sum(self.received.values()))
        answers = self.data.get(to) or [250]
        code = answers.pop(0) if len(answers) > 1 else answers[0]
        if code == 250:
            self.delivered[mid] += 1
            return "250 OK"
        return f"{code} scripted answer"


@contextmanager
def recording_smtp() -> Iterator[tuple[str, RecordingSmtp]]:
    handler = RecordingSmtp()
    with serve_smtp(handler) as url:
        yield url, handler


class RecordingHttp:
    """An HTTP provider (Twilio-, FCM-shaped) answering from a script per target (the SMS
    `To`, else the path) and recording every request with its time."""

    def __init__(self) -> None:
        self.app = FastAPI()
        self.script: dict[str, list[tuple[int, dict[str, Any], dict[str, str]]]] = {}
        self.calls: list[tuple[str, float]] = []  # (target, monotonic time)

        @self.app.post("/{path:path}")
        async def anything(path: str, request: Request) -> Response:
            from urllib.parse import parse_qsl
            body = await request.body()
            form = dict(parse_qsl(body.decode(errors="replace")))
            key = form.get("To") if path.endswith("Messages.json") else path
            self.calls.append((str(key), asyncio.get_running_loop().time()))
            answers = self.script.get(str(key)) or [(201, {"sid": f"SM{len(self.calls)}"}, {})]
            status, payload, headers = answers.pop(0) if len(answers) > 1 else answers[0]
            import json
            return Response(json.dumps(payload), status_code=status, headers=headers,
                            media_type="application/json")

    def count(self, key: str) -> int:
        return sum(1 for k, _ in self.calls if k == key)


@dataclass
class Figures:
    """What a scenario prints: lost, duplicated, unexpected, and its bound."""

    name: str
    accepted: int
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    unknown: int = 0
    bound: str = ""

    def show(self) -> str:
        line = (f"[{self.name}] accepted={self.accepted} lost={len(self.lost)} "
                f"duplicated={len(self.duplicated)} unexpected={len(self.unexpected)} "
                f"unknown={self.unknown} {self.bound}")
        print(line)  # noqa: T201 (the suite's figures)
        return line


def reconcile(name: str, rows: dict[str, dict[str, Any]], accepted: set[str],
              delivered: Counter[str]) -> Figures:
    """`rows`: message rows by idempotency key; `accepted`: the keys sent in; `delivered`:
    250s at the sink by message id. Lost: accepted, not delivered, and not reported
    `unknown` (an unknown one may or may not have arrived: that is its meaning).
    Duplicated: a message id delivered more than once, or a key with two message ids
    delivered. Unexpected: deliveries of messages no accepted key owns."""
    f = Figures(name, len(accepted))
    owned = {r["id"]: key for key, r in rows.items()}
    for key in sorted(accepted):
        row = rows.get(key)
        if row is None or (delivered[row["id"]] == 0 and row["status"] != "unknown"):
            f.lost.append(key)
        elif delivered[row["id"]] > 1:
            f.duplicated.append(key)
        f.unknown += bool(row and row["status"] == "unknown")
    f.unexpected = [mid for mid in delivered if mid not in owned]
    return f


def _log(service: str) -> Any:
    """TOUCHPOINT_TEST_LOGS=dir keeps each subprocess's log there (for debugging)."""
    where = os.environ.get("TOUCHPOINT_TEST_LOGS")
    if not where:
        return subprocess.DEVNULL
    return open(Path(where) / f"{service}-{os.getpid()}-{free_port()}.log", "wb")  # noqa: SIM115


def serve(service: str, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """`touchpoint serve <service>`, its log kept where TOUCHPOINT_TEST_LOGS says."""
    log = _log(service)
    return support_serve(service, env, port, stderr=log, stdout=log)




def service_env(own: Settings, admin_headers: dict[str, str], **extra: str) -> dict[str, str]:
    """The environment of a `touchpoint serve` subprocess on `own`'s database and topics
    (`extra` adds or overrides TOUCHPOINT_* variables)."""
    return {**os.environ, "TOUCHPOINT_ENV": "test", "TOUCHPOINT_DATABASE_URL": own.database_url,
            "TOUCHPOINT_KAFKA_BOOTSTRAP": own.kafka_bootstrap,
            "TOUCHPOINT_TOPIC_PREFIX": own.topic_prefix,
            "TOUCHPOINT_BOOTSTRAP_ADMIN_KEY": admin_headers["Authorization"][7:],
            "TOUCHPOINT_CONSUMER_FETCH_MAX_WAIT_MS": "10", **extra}


async def stop_all(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGKILL each process and reap it."""
    for p in procs:
        kill(p)
        await asyncio.to_thread(p.wait, 20)


async def journey_admin_key(engine: AsyncEngine, ws: str) -> str:
    """A new admin key of workspace `ws`, stored in journey's key table."""
    key = new_key("admin")
    async with engine.begin() as conn:
        await conn.execute(insert(journey_keys).values(key_hash=hash_key(key), kind="admin",
                                                       workspace_id=ws, name="reliability"))
    return key


def entered(ws: str, profile: str, event: str, eid: str | None = None) -> ProfileEvent:
    """A profile event (track `event`, now) that enters `profile` into a journey."""
    now = datetime.now(UTC)
    eid = eid or f"ev-{uuid.uuid4().hex}"
    return ProfileEvent(
        id=eid, workspace_id=ws, profile_id=profile,
        profile=ProfileSnapshot(profile_id=profile, email=f"{profile}@example.com"),
        event=Event(id=eid, workspace_id=ws, type=EventType.track, event=event,
                    user_id=f"u-{profile}", timestamp=now, received_at=now))


class CommandReader:
    """Reads workspace `ws`'s send commands off the topic into `commands`, in the
    background, from `start()` to `stop()`."""

    def __init__(self, own: Settings, ws: str, *, timeout_ms: int = 100,
                 max_records: int | None = None, **options: Any) -> None:
        self.commands: list[dict[str, Any]] = []
        self._ws, self._timeout_ms, self._max_records = ws, timeout_ms, max_records
        self._reader = AIOKafkaConsumer(
            own.topic("send-commands"), bootstrap_servers=own.kafka_bootstrap,
            group_id=f"reader-{uuid.uuid4()}", auto_offset_reset="earliest",
            **{"fetch_max_wait_ms": 20, **options})
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._reader.start()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            for batch in (await self._reader.getmany(
                    timeout_ms=self._timeout_ms, max_records=self._max_records)).values():
                self.commands.extend(c for c in map(orjson.loads, (r.value for r in batch))
                                     if c["workspace_id"] == self._ws)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._reader.stop()


def sends_once(name: str, customers: list[str], commands: list[dict[str, Any]]) -> Figures:
    """Figures of a journey scenario: each customer should have exactly one idempotency key
    among `commands` (a re-published copy under the same key is not a duplicate)."""
    keys: dict[str, set[str]] = {}
    for c in commands:
        keys.setdefault(c["profile_id"], set()).add(c["idempotency_key"])
    f = Figures(name, len(customers))
    f.lost = [p for p in customers if p not in keys]
    f.duplicated = [p for p, k in keys.items() if len(k) > 1]
    f.unexpected = [p for p in keys if p not in set(customers)]
    return f


def email_sends(tag: str, template: str, count: int, mailbox: str) -> list[SendCommand]:
    """`count` email send commands of workspace `default`, keyed `<tag>-<n>`, to
    `<mailbox><n>@example.com`."""
    return [SendCommand(id=f"{tag}-{n}", workspace_id="default",
                        profile_id=str(uuid.uuid4()), idempotency_key=f"{tag}-{n}",
                        channel=Channel.email, template=template,
                        to=Recipient(email=f"{mailbox}{n}@example.com"),
                        requested_at=datetime.now(UTC)) for n in range(count)]


async def publish_sends(producer: Any, own: Settings, cmds: list[SendCommand]) -> None:
    await publish(producer, own.topic("send-commands"),
                  [(message_key(c.workspace_id, c.profile_id), c) for c in cmds],
                  topic_short="send-commands")


async def settled(engine: AsyncEngine, keys: list[str], *, done: tuple[str, ...],
                  within: float, every: float = 0.1,
                  show: Callable[[dict[str, dict[str, Any]]], object] = len,
                  tick: Callable[[], None] | None = None) -> dict[str, dict[str, Any]]:
    """Polls the message rows of `keys` until there is one per key, each in a status of
    `done`; fails after `within` seconds with `show(rows)`. `tick` runs before each poll."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        if tick is not None:
            tick()
        async with engine.connect() as conn:
            rows = {r["idempotency_key"]: dict(r) for r in (await conn.execute(
                select(messages).where(messages.c.idempotency_key.in_(keys))
            )).mappings()}
        if len(rows) == len(keys) and all(r["status"] in done for r in rows.values()):
            return rows
        assert asyncio.get_running_loop().time() < deadline, show(rows)
        await asyncio.sleep(every)


async def profile_applied(engine: AsyncEngine, ws: str) -> tuple[int, int]:
    """Workspace `ws`'s history rows and the sum of its profiles' `event_count`."""
    async with engine.connect() as conn:
        rows = (await conn.execute(select(func.count()).select_from(events).where(
            events.c.workspace_id == ws))).scalar_one()
        counted = (await conn.execute(select(func.coalesce(func.sum(
            profiles.c.event_count), 0)).where(profiles.c.workspace_id == ws))).scalar_one()
    return rows, int(counted)


async def email_template(url: str, admin_headers: dict[str, str], name: str) -> None:
    """Once `url` (messaging) is ready, the email template `name`: "Once" / "only once"."""
    await ready(url)
    async with httpx.AsyncClient(headers=admin_headers, timeout=10) as http:
        r = await http.put(f"{url}/v1/templates/{name}", json={
            "channel": "email", "subject": "Once", "text": "only once"})
        assert r.status_code == 200, r.text


async def scenario(settings: Settings, prefix: str,
                   client_id: str) -> tuple[Settings, AsyncEngine, AIOKafkaProducer]:
    """A scenario's own topics (`<prefix>-<random>.`), an engine on its database and a started
    producer; the scenario stops and disposes of them."""
    own = settings.model_copy(update={"topic_prefix": f"{prefix}-{uuid.uuid4().hex[:8]}."})
    await ensure_topics(own)
    engine = create_engine(own.database_url)
    producer = create_producer(own, client_id=client_id)
    await producer.start()
    return own, engine, producer


async def publish_journey(url: str, key: str, journey: dict[str, Any]) -> None:
    """Once journey at `url` is ready, `journey` saved and published with admin key `key`."""
    await ready(url)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http:
        r = await http.post(f"{url}/v1/journeys", json=journey)
        assert r.status_code == 201, r.text
        r = await http.post(f"{url}/v1/journeys/{journey['key']}/publish")
        assert r.status_code == 200, r.text


async def applied_once(engine: AsyncEngine, ws: str, name: str, accepted: int, total: int,
                       every: float = 0.1) -> tuple[Figures, int, int]:
    """Waits (120 s at most) until `total` events of `ws` are applied and counted, then 1 s
    more for any counted twice: the figures, the history rows and the counted events."""
    deadline = asyncio.get_running_loop().time() + 120
    while (got := await profile_applied(engine, ws))[0] < total or got[1] < total:
        assert asyncio.get_running_loop().time() < deadline, got
        await asyncio.sleep(every)
    await asyncio.sleep(1)  # anything counted twice would show now
    rows, counted = await profile_applied(engine, ws)
    f = Figures(name, accepted)
    f.lost = ["x"] * max(0, total - rows)
    f.duplicated = ["x"] * max(0, counted - total)
    return f, rows, counted


async def publish_emails(producer: Any, own: Settings, tag: str, template: str, count: int,
                         mailbox: str) -> list[SendCommand]:
    """`email_sends(...)`, published at once; the commands."""
    cmds = email_sends(tag, template, count, mailbox)
    await publish_sends(producer, own, cmds)
    return cmds


async def journey_scenario(settings: Settings, prefix: str, client_id: str,
                           ) -> tuple[Settings, AIOKafkaProducer, str, str, CommandReader]:
    """`scenario` for journey: a new workspace with an admin key, and a started reader of
    its send commands: (own, producer, ws, key, reader)."""
    own, engine, producer = await scenario(settings, prefix, client_id)
    ws = f"ws-{uuid.uuid4().hex[:10]}"
    key = await journey_admin_key(engine, ws)
    await engine.dispose()
    reader = CommandReader(own, ws)
    await reader.start()
    return own, producer, ws, key, reader


async def send_track(producer: Any, own: Settings, ws: str, user: int, n: int,
                     event: str) -> None:
    """Track call `n` of user `user` of `ws` (event `event`) onto the events topic."""
    value = orjson.dumps({
        "id": f"{ws}-{user}-{n}", "workspace_id": ws, "type": "track",
        "event": event, "user_id": f"{ws}-user-{user}",
        "timestamp": "2026-12-04T10:00:00Z", "received_at": "2026-12-04T10:00:00Z"})
    await producer.send_and_wait(own.topic("events"), value,
                                 key=f"{ws}:{ws}-user-{user}".encode())
