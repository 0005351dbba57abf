"""Recovery after SIGKILL: from the kill to the restarted consumer's first commit, on Tansu,
with the default session timeout (6 s) and static membership as `touchpoint serve` sets it
(TOUCHPOINT_CONSUMER_INSTANCE_ID). Bound: session timeout + 3 s; twice that when the
kills overlap (both members of a group killed, both restarted)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import orjson
import pytest

from shared.kafka import create_producer
from shared.kafka.admin import ensure_topics
from shared.settings import Settings
from tests.reliability.harness import ROUNDS

pytestmark = pytest.mark.integration
SESSION_S = 6.0
BOUND_S = SESSION_S + 3


def _member(settings: Settings, topic: str, name: str, instance: str) -> subprocess.Popen[str]:
    env = {**os.environ, "TOUCHPOINT_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
           "TOUCHPOINT_TOPIC_PREFIX": settings.topic_prefix, "TOUCHPOINT_ENV": "test",
           "TOUCHPOINT_DATABASE_URL": settings.database_url,
           "TOUCHPOINT_CONSUMER_SESSION_TIMEOUT_MS": str(int(SESSION_S * 1000)),
           "TOUCHPOINT_CONSUMER_INSTANCE_ID": instance}
    return subprocess.Popen([sys.executable, "-m", "tests.reliability.member", topic, name],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, start_new_session=True)


def _first_commit(proc: subprocess.Popen[str]) -> float:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("commit"):
            return float(line.split()[1])
    raise AssertionError("the member exited without committing")


def _event(i: int) -> bytes:
    return orjson.dumps({"id": f"r{i}", "workspace_id": "w", "type": "track", "event": "X",
                         "user_id": f"u{i}", "timestamp": "2026-12-04T10:00:00Z",
                         "received_at": "2026-12-04T10:00:00Z"})


@pytest.mark.timeout(240)
@pytest.mark.parametrize("members", [1, 2], ids=["one-kill", "overlapping-kills"])
@pytest.mark.parametrize("round_", range(ROUNDS))
async def test_sigkill_to_first_commit_within_bound(settings: Settings, unique: str,
                                                    members: int, round_: int) -> None:
    topic = settings.topic(f"recovery-{unique}")
    await ensure_topics(settings, [topic])
    name = f"recovery-{unique}"
    producer = create_producer(settings)
    await producer.start()
    stop = asyncio.Event()

    async def feed() -> None:  # a steady flow, so every partition has work to commit
        i = 0
        while not stop.is_set():
            await producer.send_and_wait(topic, _event(i), key=f"k{i}".encode())
            i += 1
            await asyncio.sleep(0.05)

    feeding = asyncio.create_task(feed())
    procs = [_member(settings, topic, name, f"host:{n}") for n in range(members)]
    try:
        await asyncio.gather(*(asyncio.to_thread(_first_commit, p) for p in procs))
        await asyncio.sleep(1)
        killed = time.time()
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)
        for p in procs:
            await asyncio.to_thread(p.wait, 10)
        procs = [_member(settings, topic, name, f"host:{n}") for n in range(members)]
        firsts = await asyncio.gather(*(asyncio.to_thread(_first_commit, p) for p in procs))
        took = max(firsts) - killed
        bound = BOUND_S * (2 if members > 1 else 1)
        print(f"[recovery {members} member(s)#{round_}] kill -> first commit "  # noqa: T201
              f"{took:.1f}s (bound {bound:.0f}s, session {SESSION_S:.0f}s)")
        assert took <= bound
    finally:
        stop.set()
        await feeding
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                await asyncio.to_thread(p.wait, 10)
        await producer.stop()
