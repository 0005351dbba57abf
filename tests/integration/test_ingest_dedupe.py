"""The dedupe store's protocol against real Postgres: claim, confirm, release, lease."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest

from services.ingest.dedupe import Deduper
from shared.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def deduper(settings: Settings) -> AsyncIterator[Deduper]:
    store = Deduper(settings.database_url, lease_s=0.5, flush_interval_s=0.01)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


async def flushed(store: Deduper) -> None:
    for _ in range(200):
        if store.acks is not None and not store.acks.unwritten:  # every ack is written
            return
        await asyncio.sleep(0.01)
    raise TimeoutError("acks not flushed")


async def test_claim_confirm_then_duplicate(deduper: Deduper, unique: str) -> None:
    ids = [f"{unique}-{i}" for i in range(3)]
    first = await deduper.claim("w1", ids)
    assert first.mine == ids and not first.duplicates and not first.in_flight
    # Before the confirmation the ids are in flight: a retry must not get a 200 yet.
    early = await deduper.claim("w1", ids)
    assert early.mine == [] and early.in_flight == set(ids)
    deduper.confirm(first)
    later = await deduper.claim("w1", [*ids, f"{unique}-new"])
    assert later.mine == [f"{unique}-new"] and later.duplicates == set(ids)
    await flushed(deduper)
    # A new store (a restarted ingest) reads the same from Postgres.
    other = Deduper(deduper.dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
    await other.start()
    try:
        again = await other.claim("w1", ids)
        assert again.duplicates == set(ids) and again.mine == []
        # Other workspaces have their own ids.
        assert (await other.claim("w2", ids)).mine == ids
    finally:
        await other.close()


async def test_released_ids_can_be_claimed_at_once(deduper: Deduper, unique: str) -> None:
    ids = [f"{unique}-{i}" for i in range(4)]
    first = await deduper.claim("w", ids)
    # The producer delivered the first two, not the others.
    await deduper.release("w", first, ids[2:])
    deduper.confirm(first)
    retry = await deduper.claim("w", ids)
    assert retry.mine == ids[2:] and retry.duplicates == set(ids[:2])


async def test_a_stale_unacknowledged_claim_is_taken_over(deduper: Deduper, unique: str) -> None:
    ids = [f"{unique}-a", f"{unique}-b"]
    crashed = await deduper.claim("w", ids)  # its request died before the broker acked
    assert crashed.mine == ids
    await asyncio.sleep(0.7)  # past the 0.5 s lease of this fixture
    retry = await deduper.claim("w", ids)
    assert retry.mine == ids
    # An acknowledged claim is never taken over, however old.
    deduper.confirm(retry)
    await flushed(deduper)
    await asyncio.sleep(0.7)
    assert (await deduper.claim("w", ids)).duplicates == set(ids)


async def test_concurrent_requests_for_the_same_ids(deduper: Deduper, unique: str) -> None:
    ids = [f"{unique}-{i}" for i in range(5)]
    claims = await asyncio.gather(*(deduper.claim("w", ids) for _ in range(4)))
    owners = [c for c in claims if c.mine]
    assert len(owners) == 1 and owners[0].mine == ids
    for claim in claims:
        if claim is not owners[0]:
            assert claim.in_flight == set(ids) and not claim.mine


async def test_every_claim_is_answered_under_a_stream(deduper: Deduper, unique: str) -> None:
    """Thousands of claims arriving continuously, across rounds of the two claim
    statements, are all answered."""

    async def request(i: int) -> None:
        await asyncio.sleep(random.random() * 0.5)
        claim = await deduper.claim("w", [f"{unique}-{i}"])
        assert claim.mine == [f"{unique}-{i}"]

    await asyncio.wait_for(asyncio.gather(*(request(i) for i in range(3000))), 30)
