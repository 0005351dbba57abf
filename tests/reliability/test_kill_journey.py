"""SIGKILL of `touchpoint serve journey` while customers enter a journey (an entry, a 1 s
durable timer, a send), restart, and reconcile the send commands on the topic: every
customer gets exactly one send (one idempotency key; a command re-published under the same
key is deduplicated by messaging and counted apart), none lost."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from shared.kafka.codec import encode
from shared.settings import Settings
from tests.reliability.harness import (
    ROUNDS,
    entered,
    journey_scenario,
    kill,
    publish_journey,
    sends_once,
    serve,
    service_env,
)
from tests.support.net import free_port

pytestmark = pytest.mark.integration
CUSTOMERS = 60
JOURNEY = {"key": "rel-welcome", "name": "Reliability welcome",
           "stages": [{"key": "joined", "enter": {"event": "Rel Signed Up"},
                       "steps": [{"id": "settle", "wait": "PT1S"},
                                 {"id": "hello", "send": {"channel": "email",
                                                          "template": "welcome"}}]}]}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("round_", range(ROUNDS))
async def test_sigkill_journey_mid_flow_sends_each_customer_once(
        settings: Settings, admin_headers: dict[str, str], round_: int) -> None:
    own, producer, ws, key, reader = await journey_scenario(settings, "killj", "test-kill-journey")
    commands = reader.commands
    port = free_port()
    env = service_env(own, admin_headers)
    url = f"http://127.0.0.1:{port}"
    proc = serve("journey", env, port)
    try:
        await publish_journey(url, key, JOURNEY)
        profiles = [str(uuid.uuid4()) for _ in range(CUSTOMERS)]

        async def enter(profile: str) -> None:
            message = entered(ws, profile, "Rel Signed Up")
            await producer.send_and_wait(own.topic("profile-events"), encode(message),
                                         key=f"{ws}:{profile}".encode())

        async def feed() -> None:  # ~20 customers/s, before, during and after the kill
            for profile in profiles:
                await enter(profile)
                await asyncio.sleep(0.05)

        await enter(str(uuid.uuid4()))  # warm-up: the consumer has joined once its send is out
        deadline = asyncio.get_running_loop().time() + 60
        while not commands:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        feeding = asyncio.create_task(feed())
        while len(commands) < 10 + 10 * round_:
            await asyncio.sleep(0.02)
        kill(proc)
        killed = time.monotonic()
        await asyncio.to_thread(proc.wait, 20)
        at_kill = len(commands)
        proc = serve("journey", env, port)
        await feeding
        deadline = asyncio.get_running_loop().time() + 120
        while len({c["profile_id"] for c in commands}) < CUSTOMERS + 1:
            assert asyncio.get_running_loop().time() < deadline, len(commands)
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)  # a late second send would show now
        warm_up = commands[0]["profile_id"]
        mine = [c for c in commands if c["profile_id"] != warm_up]
        f = sends_once(f"kill-journey#{round_}", profiles, mine)
        keyed = len({c["profile_id"] for c in mine})
        f.bound = (f"killed at {at_kill - 1} sends; re-published under the same key (deduped by "
                   f"messaging): {len(mine) - keyed}; all sent "
                   f"{time.monotonic() - killed:.1f}s after the kill")
        f.show()
        assert not f.lost and not f.duplicated and not f.unexpected
    finally:
        kill(proc)
        await asyncio.to_thread(proc.wait, 20)
        await reader.stop()
        await producer.stop()
