"""A channel's rate limit holds across replicas: two processes' limiters (two engines)
sharing one bucket in Postgres hand out no more than the rate allows between them."""

from __future__ import annotations

import asyncio

import pytest

from services.messaging.providers.routing import SharedLimit
from shared.db import create_engine

pytestmark = pytest.mark.integration


async def test_two_replicas_share_one_bucket(database_url: str, unique: str) -> None:
    engines = [create_engine(database_url) for _ in range(2)]
    key = (f"ws-{unique}", "sms", "twilio")
    limits = [SharedLimit(e, key, rate=5.0) for e in engines]
    try:
        waits = await asyncio.gather(*(limits[i % 2].reserve() for i in range(20)))
    finally:
        for e in engines:
            await e.dispose()
    waits = sorted(waits)
    # burst 5 at once, then one every 0.2 s for both replicas together: the 20th waits
    # ~3 s (per-replica buckets would let each send 10 within ~1 s, twice the rate).
    assert waits[:5] == [0.0] * 5
    assert 2.7 <= waits[-1] <= 3.2, waits
    print(f"[rate-limit] 20 sends, 2 replicas, 5/s: last waits {waits[-1]:.2f}s")  # noqa: T201
