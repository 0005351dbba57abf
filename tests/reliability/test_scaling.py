"""Consumers scaled 1 -> 3 -> 1 under load (`touchpoint serve` replicas in one consumer
group, each a static member; the two extra replicas stop with SIGTERM), for messaging
(300 emails: reconciled at the SMTP sink), profile (300 events: history rows and
`event_count`) and journey (60 customers through an entry, a 1 s durable timer and a send:
one idempotency key each). Nothing lost, nothing twice. Soak only (`make soak`): about a
minute each."""

from __future__ import annotations

import asyncio
import signal
import uuid
from typing import Any

import pytest

from shared.kafka.codec import encode
from shared.settings import Settings
from tests.reliability.harness import (
    SOAK,
    applied_once,
    email_sends,
    email_template,
    entered,
    journey_scenario,
    publish_journey,
    publish_sends,
    ready,
    reconcile,
    recording_smtp,
    scenario,
    send_track,
    sends_once,
    serve,
    service_env,
    settled,
    stop_all,
)
from tests.support.net import free_port

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not SOAK, reason="soak only (TOUCHPOINT_SOAK=1, make soak)")]
SENDS = 300


@pytest.mark.timeout(300)
async def test_scale_messaging_1_3_1_under_load(settings: Settings,
                                                admin_headers: dict[str, str]) -> None:
    own, engine, producer = await scenario(settings, "scale", "test-scale")
    with recording_smtp() as (smtp_url, smtp):
        env = service_env(own, admin_headers, TOUCHPOINT_SMTP_URL=smtp_url)
        port = free_port()
        procs = [serve("messaging", env, port)]
        try:
            await email_template(f"http://127.0.0.1:{port}", admin_headers, "scale")
            run = uuid.uuid4().hex[:8]
            cmds = email_sends(f"s-{run}", "scale", SENDS, "s")

            async def feed() -> None:  # ~20/s for 15 s
                for c in cmds:
                    await publish_sends(producer, own, [c])
                    await asyncio.sleep(0.05)

            await _scale_1_3_1("messaging", env, procs, asyncio.create_task(feed()))
            keys = [c.idempotency_key for c in cmds]
            rows = await settled(engine, keys, done=("sent", "unknown"), within=120, every=0.2)
            figures = reconcile("scale-messaging-1-3-1", rows, set(keys), smtp.delivered)
            figures.show()
            assert not figures.lost and not figures.duplicated and not figures.unexpected
            assert figures.unknown == 0  # nobody was killed
        finally:
            await stop_all(procs)
            await producer.stop()
            await engine.dispose()


async def _scale_1_3_1(service: str, env: dict[str, str], procs: list[Any],
                       feeding: asyncio.Task[None]) -> None:
    """With `procs[0]` serving and `feeding` under way: two more replicas for 6 s, then
    SIGTERM them and let the feed finish."""
    await asyncio.sleep(3)
    procs += [serve(service, env, free_port()) for _ in range(2)]  # 1 -> 3
    await asyncio.sleep(6)
    for p in procs[1:]:  # 3 -> 1, gracefully
        p.send_signal(signal.SIGTERM)
    for p in procs[1:]:
        await asyncio.to_thread(p.wait, 30)
    await feeding


@pytest.mark.timeout(300)
async def test_scale_profile_1_3_1_under_load(settings: Settings,
                                              admin_headers: dict[str, str]) -> None:
    ws, users, per_user = f"rel-{uuid.uuid4().hex[:8]}", 30, 10
    own, engine, producer = await scenario(settings, "scalep", "test-scale-profile")
    env = service_env(own, admin_headers)
    port = free_port()
    procs = [serve("profile", env, port)]

    async def feed() -> None:  # ~20 events/s for 15 s
        for n in range(per_user):
            for u in range(users):
                await send_track(producer, own, ws, u, n, "Scaling")
                await asyncio.sleep(0.05)

    try:
        await ready(f"http://127.0.0.1:{port}")
        await _scale_1_3_1("profile", env, procs, asyncio.create_task(feed()))
        total = users * per_user
        f, rows, counted = await applied_once(engine, ws, "scale-profile-1-3-1", total, total,
                                              every=0.2)
        f.show()
        assert rows == total and counted == total
    finally:
        await stop_all(procs)
        await producer.stop()
        await engine.dispose()


@pytest.mark.timeout(300)
async def test_scale_journey_1_3_1_under_load(settings: Settings,
                                              admin_headers: dict[str, str]) -> None:
    own, producer, ws, key, reader = await journey_scenario(settings, "scalej",
                                                            "test-scale-journey")
    commands = reader.commands
    env = service_env(own, admin_headers)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs = [serve("journey", env, port)]
    customers = [str(uuid.uuid4()) for _ in range(60)]

    async def enter(profile: str) -> None:
        await producer.send_and_wait(own.topic("profile-events"),
                                     encode(entered(ws, profile, "Rel Scaled")),
                                     key=f"{ws}:{profile}".encode())

    async def feed() -> None:  # 4 customers/s for 15 s
        for profile in customers:
            await enter(profile)
            await asyncio.sleep(0.25)

    try:
        await publish_journey(url, key, {
            "key": "rel-scaled", "name": "Scaling", "stages": [
                {"key": "in", "enter": {"event": "Rel Scaled"},
                 "steps": [{"id": "settle", "wait": "PT1S"},
                           {"id": "hi", "send": {"channel": "email", "template": "welcome"}}]}]})
        await _scale_1_3_1("journey", env, procs, asyncio.create_task(feed()))
        deadline = asyncio.get_running_loop().time() + 120
        while len({c["profile_id"] for c in commands}) < len(customers):
            assert asyncio.get_running_loop().time() < deadline, len(commands)
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)  # a late second send would show now
        f = sends_once("scale-journey-1-3-1", customers, commands)
        keyed = len({c["profile_id"] for c in commands})
        f.bound = f"re-published under the same key: {len(commands) - keyed}"
        f.show()
        assert not f.lost and not f.duplicated and not f.unexpected
    finally:
        await stop_all(procs)
        await reader.stop()
        await producer.stop()
