"""SIGKILL of `touchpoint serve profile` while events flow in, restart, and reconcile the
tagged events against Postgres: every event applied once (its history row) and counted once
(each profile's `event_count`), none lost, none twice."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from shared.settings import Settings
from tests.reliability.harness import (
    ROUNDS,
    applied_once,
    kill,
    profile_applied,
    ready,
    scenario,
    send_track,
    serve,
    service_env,
)
from tests.support.net import free_port

pytestmark = pytest.mark.integration
USERS, PER_USER = 30, 10


@pytest.mark.timeout(300)
@pytest.mark.parametrize("round_", range(ROUNDS))
async def test_sigkill_profile_under_load_counts_every_event_once(
        settings: Settings, admin_headers: dict[str, str], round_: int) -> None:
    ws = f"rel-{uuid.uuid4().hex[:8]}"
    own, engine, producer = await scenario(settings, "killp", "test-kill-profile")
    port = free_port()
    env = service_env(own, admin_headers)
    url = f"http://127.0.0.1:{port}"
    proc = serve("profile", env, port)

    try:
        await ready(url)
        total = USERS * PER_USER
        sent = 0

        async def feed(pairs: list[tuple[int, int]]) -> None:  # ~60 events/s
            nonlocal sent
            for u, n in pairs:
                await send_track(producer, own, ws, u, n, "Reliability")
                sent += 1
                await asyncio.sleep(1 / 60)

        await feed([(0, 0)])  # warm-up: the consumer has joined once this is applied
        while (await profile_applied(engine, ws))[0] < 1:
            await asyncio.sleep(0.05)
        feeding = asyncio.create_task(feed([(u, n) for n in range(PER_USER)
                                            for u in range(USERS) if (u, n) != (0, 0)]))
        while (await profile_applied(engine, ws))[0] < 40 + 30 * round_:
            await asyncio.sleep(0.05)
        killed = time.monotonic()
        kill(proc)
        await asyncio.to_thread(proc.wait, 20)
        at_kill = (await profile_applied(engine, ws))[0]
        proc = serve("profile", env, port)
        await feeding
        f, rows, counted = await applied_once(engine, ws, f"kill-profile#{round_}", sent, total)
        f.bound = (f"killed at {at_kill} applied; all {rows} applied "
                   f"{time.monotonic() - killed:.1f}s after the kill")
        f.show()
        assert rows == total and counted == total
    finally:
        kill(proc)
        await asyncio.to_thread(proc.wait, 20)
        await producer.stop()
        await engine.dispose()
