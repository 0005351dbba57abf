"""The journey engine against the real broker and Postgres: instances, exits, timers,
restarts and redelivery. Tests feed ProfileEvents/ProfileChanges onto per-run topics and
read SendCommands back; the profile service is not involved."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from services.journey.app import create_app
from services.journey.tables import api_keys, instances
from shared.auth import hash_key, new_key
from shared.contracts.events import Event, EventType
from shared.contracts.profile import ChangeKind, ProfileChange, ProfileEvent, ProfileSnapshot
from shared.db.engine import create_engine
from shared.kafka.admin import ensure_topics
from shared.kafka.codec import encode
from shared.settings import Settings
from tests.support.servers import serve_app

pytestmark = pytest.mark.integration

EXAMPLE: dict[str, Any] = json.loads((Path(__file__).parents[2] / "services/journey/examples/"
                                      "post-purchase-review.json").read_text())


class ShiftedClock:
    """Real time plus an offset tests can move (quiet hours, time zones)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


class Harness:
    """One journey service on its own topics, a producer, and a reader of send-commands."""

    def __init__(self, settings: Settings, clock: ShiftedClock) -> None:
        self.settings, self.clock = settings, clock
        self.commands: list[dict[str, Any]] = []
        self.identifies: list[dict[str, Any]] = []
        self.url = ""
        self.stack = AsyncExitStack()

    async def start(self) -> None:
        await ensure_topics(self.settings)
        self.engine = create_engine(self.settings.database_url, pool_size=2)
        self.producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap,
                                         linger_ms=1)
        await self.producer.start()
        self.http = httpx.AsyncClient(timeout=10)
        self._reader = asyncio.create_task(self._read())
        await self.start_service()

    async def start_service(self) -> None:
        self.service = AsyncExitStack()
        self.url = await self.service.enter_async_context(
            serve_app(create_app(self.settings, self.clock)))
        for _ in range(300):
            if (await self.http.get(f"{self.url}/readyz")).status_code == 200:
                return
            await asyncio.sleep(0.1)
        raise TimeoutError("journey never became ready")

    async def stop_service(self) -> None:
        await self.service.aclose()

    async def close(self) -> None:
        await self.stop_service()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self.producer.stop()
        await self.http.aclose()
        await self.engine.dispose()

    async def _read(self) -> None:
        consumer = AIOKafkaConsumer(
            self.settings.topic("send-commands"), self.settings.topic("events"),
            bootstrap_servers=self.settings.kafka_bootstrap, group_id=f"reader-{uuid.uuid4()}",
            auto_offset_reset="earliest", fetch_max_wait_ms=20)
        await consumer.start()
        try:
            while True:
                for tp, batch in (await consumer.getmany(timeout_ms=100)).items():
                    target = self.commands if tp.topic.endswith("send-commands") \
                        else self.identifies
                    target.extend(orjson.loads(r.value) for r in batch)
        finally:
            await consumer.stop()

    async def workspace(self) -> tuple[str, dict[str, str]]:
        """A fresh workspace and an admin key for it: tests never see each other's journeys."""
        ws, key = f"ws-{uuid.uuid4().hex[:10]}", new_key("admin")
        async with self.engine.begin() as conn:
            await conn.execute(insert(api_keys).values(key_hash=hash_key(key), kind="admin",
                                                       workspace_id=ws, name="test"))
        return ws, {"Authorization": f"Bearer {key}"}

    async def publish(self, headers: dict[str, str], doc: dict[str, Any]) -> int:
        r = await self.http.post(f"{self.url}/v1/journeys", headers=headers, json=doc)
        assert r.status_code == 201, r.text
        r = await self.http.post(f"{self.url}/v1/journeys/{doc['key']}/publish", headers=headers)
        assert r.status_code == 200, r.text
        version: int = r.json()["published_version"]
        return version

    async def event(self, ws: str, profile: str, name: str, *, id: str | None = None,
                    snapshot: dict[str, Any] | None = None, **properties: Any) -> str:
        now = self.clock.now()
        event_id = id or f"ev-{uuid.uuid4().hex}"
        snap = ProfileSnapshot.model_validate({
            "profile_id": profile, "user_id": f"u-{profile}", "email": f"{profile}@example.com",
            "phone": "+33600000000"} | (snapshot or {}))
        message = ProfileEvent(id=event_id, workspace_id=ws, profile_id=profile, profile=snap,
                               event=Event(id=event_id, workspace_id=ws, type=EventType.track,
                                           event=name, user_id=f"u-{profile}",
                                           properties=properties, timestamp=now,
                                           received_at=now))
        await self.producer.send_and_wait(self.settings.topic("profile-events"), encode(message),
                                          key=f"{ws}:{profile}".encode())
        return event_id

    async def change(self, ws: str, profile: str, kind: ChangeKind, **data: Any) -> None:
        message = ProfileChange(id=f"ch-{uuid.uuid4().hex}", workspace_id=ws, profile_id=profile,
                                kind=kind, data=data, occurred_at=self.clock.now(),
                                profile=ProfileSnapshot(profile_id=profile,
                                                        email=f"{profile}@example.com"))
        await self.producer.send_and_wait(self.settings.topic("profile-changes"),
                                          encode(message), key=f"{ws}:{profile}".encode())

    async def sends(self, ws: str, count: int, *, timeout: float = 20,
                    where: Callable[[dict[str, Any]], bool] = lambda c: True
                    ) -> list[dict[str, Any]]:
        """Distinct send commands (by idempotency key) of a workspace, once `count` arrived."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            found = list({c["idempotency_key"]: c for c in self.commands
                          if c["workspace_id"] == ws and where(c)}.values())
            if len(found) >= count:
                return found
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{len(found)} of {count} sends for {ws}: "
                                   f"{[(c['template'], c['journey']) for c in found]}")
            await asyncio.sleep(0.05)

    def raw_sends(self, ws: str) -> list[dict[str, Any]]:
        return [c for c in self.commands if c["workspace_id"] == ws]

    async def instances(self, ws: str) -> list[Any]:
        async with self.engine.connect() as conn:
            return list((await conn.execute(select(instances).where(
                instances.c.workspace_id == ws).order_by(instances.c.entered_at))).all())

    async def until(self, check: Callable[[], Any], timeout: float = 20) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("condition not met")
            await asyncio.sleep(0.05)


@asynccontextmanager
async def running_harness(settings: Settings) -> AsyncIterator[Harness]:
    """A journey service on topics of its own (own consumer groups too)."""
    own = settings.model_copy(update={"topic_prefix": f"jt-{uuid.uuid4().hex[:8]}."})
    h = Harness(own, ShiftedClock())
    await h.start()
    try:
        yield h
    finally:
        await h.close()


@pytest.fixture(scope="module")
async def harness(settings: Settings) -> AsyncIterator[Harness]:
    async with running_harness(settings) as h:
        yield h


def fast_example(**changes: Any) -> dict[str, Any]:
    """The issue's example with short durations and no holdout (unless asked)."""
    doc = copy.deepcopy(EXAMPLE)
    steps = doc["stages"][0]["steps"]
    steps[0]["wait"] = "PT1S"
    steps[2]["wait_for"]["timeout"] = "PT3S"
    doc.update({"holdout_percent": 0, "quiet_hours": None} | changes)
    return {k: v for k, v in doc.items() if v is not None}


async def test_two_orders_run_as_two_instances_and_each_wait_for_matches_its_own(
        harness: Harness) -> None:
    ws, admin = await harness.workspace()
    await harness.publish(admin, fast_example())
    await harness.event(ws, "p1", "Order Completed", order_id="o-1", total=80)
    await harness.event(ws, "p1", "Order Completed", order_id="o-2", total=120)
    await harness.event(ws, "p1", "Order Completed", order_id="o-3", total=10)  # where fails
    asks = await harness.sends(ws, 2)
    assert sorted(c["journey"]["instance"] for c in asks) == ["o-1", "o-2"]
    assert {c["template"] for c in asks} == {"review-request"}
    # A review of order 2 only answers order 2's wait_for; order 1 times out into the nudge.
    await harness.event(ws, "p1", "Review Submitted", order_id="o-2")
    done = await harness.sends(ws, 4)
    by = {(c["journey"]["instance"], c["template"]) for c in done}
    assert by == {("o-1", "review-request"), ("o-2", "review-request"),
                  ("o-2", "review-thanks"), ("o-1", "review-nudge")}
    nudge = next(c for c in done if c["template"] == "review-nudge")
    assert nudge["channel"] == "sms" and nudge["to"]["phone"] == "+33600000000"
    assert nudge["context"]["event"]["properties"]["order_id"] == "o-1"
    rows = await harness.instances(ws)
    assert {(r.instance_key, r.stage, r.status) for r in rows} == {
        ("o-1", "purchased", "active"), ("o-2", "reviewed", "completed")}


async def test_refund_mid_wait_exits_at_once_and_nothing_is_sent_after(
        harness: Harness) -> None:
    ws, admin = await harness.workspace()
    doc = fast_example()
    doc["stages"][0]["steps"][0]["wait"] = "PT3S"
    await harness.publish(admin, doc)
    await harness.event(ws, "p2", "Order Completed", order_id="o-9", total=60)
    await harness.event(ws, "p2", "Order Completed", order_id="o-10", total=60)
    await harness.until(lambda: _count(harness, ws, 2))
    await harness.event(ws, "p2", "Order Refunded", order_id="o-9")

    async def exited() -> bool:
        rows = {r.instance_key: r for r in await harness.instances(ws)}
        return rows["o-9"].status == "exited"
    await harness.until(exited, timeout=5)
    rows = {r.instance_key: r for r in await harness.instances(ws)}
    assert rows["o-9"].wake_at is None and rows["o-9"].exit_reason.startswith("exit_when.0")
    assert rows["o-10"].status == "active"
    sent = await harness.sends(ws, 1)  # o-10's request still goes out after its wait
    await asyncio.sleep(1.5)
    assert [c["journey"]["instance"] for c in harness.raw_sends(ws)] == ["o-10"]
    assert sent[0]["journey"]["instance"] == "o-10"


async def _count(harness: Harness, ws: str, n: int) -> bool:
    return len(await harness.instances(ws)) >= n


WAIT_THEN_SEND = {
    "key": "nap", "name": "Wait, then one email",
    "stages": [{"key": "s", "enter": {"event": "Napped"}, "steps": [
        {"id": "nap", "wait": "PT3S"},
        {"id": "hello", "send": {"channel": "email", "template": "after-nap"}}]}],
}


async def test_restart_mid_wait_loses_no_timer_and_fires_none_twice(harness: Harness) -> None:
    ws, admin = await harness.workspace()
    await harness.publish(admin, WAIT_THEN_SEND)
    await harness.event(ws, "p3", "Napped")

    async def waiting() -> bool:
        rows = await harness.instances(ws)
        return bool(rows) and rows[0].wake_at is not None
    await harness.until(waiting)
    await harness.stop_service()  # the timer is due while nothing runs
    await asyncio.sleep(3.5)
    assert harness.raw_sends(ws) == []
    await harness.start_service()
    [sent] = await harness.sends(ws, 1)
    assert sent["template"] == "after-nap"
    await asyncio.sleep(1.5)
    assert len(harness.raw_sends(ws)) == 1
    [row] = await harness.instances(ws)
    assert (row.status, row.wake_at) == ("completed", None)


async def test_a_timer_this_process_commits_wakes_its_sleeping_timer_workers(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Idle timer workers sleep until the earliest timer they know of (capped); the handler
    that commits a sooner one wakes them, so it fires at its moment: with a 30 s cap here,
    the 3 s wait still ends within a few seconds."""
    from services.journey.timers import TimerWorker

    monkeypatch.setattr(TimerWorker, "MAX_IDLE_S", 30.0)
    await harness.stop_service()
    await harness.start_service()  # its timer workers now sleep up to 30 s when idle
    try:
        ws, admin = await harness.workspace()
        await harness.publish(admin, WAIT_THEN_SEND | {"key": "nap-wake"})
        await asyncio.sleep(1.0)  # the workers found nothing due and went to sleep
        await harness.event(ws, "p-wake", "Napped")

        async def waiting() -> bool:
            rows = await harness.instances(ws)
            return bool(rows) and rows[0].wake_at is not None
        await harness.until(waiting)  # the handler committed the 3 s timer (and woke them)
        entered = asyncio.get_running_loop().time()
        [sent] = await harness.sends(ws, 1)
        took = asyncio.get_running_loop().time() - entered
        assert sent["template"] == "after-nap"
        assert took < 8, took  # asleep until the cap, it would have taken up to 30 s
    finally:
        monkeypatch.undo()
        await harness.stop_service()
        await harness.start_service()


async def test_redelivered_event_never_sends_twice(harness: Harness) -> None:
    ws, admin = await harness.workspace()
    doc = {"key": "hi", "name": "Hi", "stages": [{"key": "s", "enter": {"event": "Waved"},
                                                  "steps": [{"id": "hi", "send": {
                                                      "channel": "email", "template": "hi"}}]}],
           "reentry": "always"}
    await harness.publish(admin, doc)
    event_id = await harness.event(ws, "p4", "Waved")
    await harness.event(ws, "p4", "Waved", id=event_id)  # the same message again
    await harness.sends(ws, 1)
    await harness.event(ws, "p4", "Waved")  # a genuinely new event does send (always)
    await harness.sends(ws, 2)
    await asyncio.sleep(1)
    assert len(harness.raw_sends(ws)) == 2, [
        (c["idempotency_key"], c["context"]["event"]["id"]) for c in harness.raw_sends(ws)]


async def test_reentry_always_replaces_a_waiting_instance(harness: Harness) -> None:
    """The old instance leaves the one-active index before its successor is written (the
    replenishment playbook re-enters on every order while it waits)."""
    ws, admin = await harness.workspace()
    doc = {"key": "refill", "name": "Refill", "reentry": "always", "stages": [{
        "key": "s", "enter": {"event": "Ordered"}, "steps": [
            {"id": "nap", "wait": "P1D"},
            {"id": "hi", "send": {"channel": "email", "template": "hi"}}]}]}
    await harness.publish(admin, doc)
    await harness.event(ws, "p9", "Ordered")
    await harness.until(lambda: _count(harness, ws, 1))
    await harness.event(ws, "p9", "Ordered")
    rows = await harness.until(lambda: _count(harness, ws, 2))
    assert sorted((r.status, r.exit_reason or "") for r in rows) == [
        ("active", ""), ("exited", "re-entered on event 'Ordered' (reentry=always)")]


async def test_wait_until_a_date_from_the_profile(harness: Harness) -> None:
    """`wait.until_field` through the service: the date comes from the event's snapshot,
    the durable timer fires on it; a profile without the date ends the flow unsent."""
    ws, admin = await harness.workspace()
    doc = {"key": "refill", "name": "Refill", "stages": [{
        "key": "s", "enter": {"event": "Ordered"}, "steps": [
            {"id": "until", "wait": {"until_field": "profile.metrics.next_order_expected_at",
                                     "offset": "-PT1S"}},
            {"id": "remind", "send": {"channel": "email", "template": "refill"}}]}]}
    await harness.publish(admin, doc)
    due = harness.clock.now() + timedelta(seconds=2)
    await harness.event(ws, "p10", "Ordered",
                        snapshot={"metrics": {"next_order_expected_at": due.isoformat()}})
    await harness.event(ws, "p11", "Ordered")
    [sent] = await harness.sends(ws, 1)
    assert sent["to"]["email"] == "p10@example.com"
    assert datetime.fromisoformat(sent["requested_at"]) >= due - timedelta(seconds=1)
    rows = await harness.until(lambda: _count(harness, ws, 2))
    statuses = {r.profile_id: r.status for r in rows}
    assert statuses["p11"] == "completed"


async def _count(harness: Harness, ws: str, n: int) -> list[Any] | None:
    rows = await harness.instances(ws)
    return rows if len(rows) == n else None


async def test_replicas_share_due_timers_and_each_fires_once(harness: Harness) -> None:
    """Two timer workers on separate connections claim with SKIP LOCKED: no double fire."""
    from services.journey.store import Documents
    from services.journey.tables import decisions
    from services.journey.timers import TimerWorker

    ws, admin = await harness.workspace()
    await harness.publish(admin, WAIT_THEN_SEND | {"key": "nap2"})
    await harness.stop_service()
    try:
        for n in range(40):
            await harness.event(ws, f"r{n}", "Napped")
        # Two bare replicas: their own engines, no producer (the outbox sweeper publishes).
        runtimes = [SimpleNamespace(engine=create_engine(harness.settings.database_url,
                                                         pool_size=2),
                                    settings=harness.settings, relay=None) for _ in range(2)]
        # Enter through the real consumer path, then fire with two bare workers later.
        await harness.start_service()
        await harness.until(lambda: _count(harness, ws, 40))
        await harness.stop_service()
        harness.clock.offset = timedelta(seconds=10)
        workers = [TimerWorker(rt, harness.clock, Documents(), batch=2)  # type: ignore[arg-type]
                   for rt in runtimes]

        async def drain(worker: TimerWorker) -> None:
            while await worker.fire_due():
                pass
        await asyncio.gather(*(drain(w) for w in workers))
        assert sum(w.fired for w in workers) == 40
        assert all(w.fired > 0 for w in workers)
        async with harness.engine.connect() as conn:
            fired = (await conn.execute(select(decisions.c.instance_id).where(
                decisions.c.workspace_id == ws, decisions.c.kind == "send"))).scalars().all()
        assert len(fired) == len(set(fired)) == 40
        for rt in runtimes:
            await rt.engine.dispose()
    finally:
        harness.clock.offset = timedelta(0)
        if harness.service is not None:
            await harness.start_service()
