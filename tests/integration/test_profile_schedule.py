"""The scheduled pass runs by itself: RFM appears and time-based segments expire."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from profile_support import ProfileWorld, eventually, profile_world

from shared.settings import Settings

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(settings: Settings, topics: list[str]) -> AsyncIterator[ProfileWorld]:
    async for w in profile_world(settings, recompute_interval_s=1):
        yield w


async def test_schedule_scores_and_expires_time_based_membership(world: ProfileWorld) -> None:
    ws, h = await world.workspace()
    # The order below must be applied within the segment's 3 s: send it only once the
    # freshly started consumer has joined its group and applies events (a first event seen).
    await world.send(ws, {"type": "track", "event": "Warmed Up", "user_id": "warm"})
    await eventually(lambda: world.lookup(h, user_id="warm"), timeout=30)
    r = await world.http.put("/v1/segments/just-bought", headers=h, json={
        "name": "Bought in the last 3 seconds",
        "rule": {"performed": {"event": "Order Completed", "within": "PT3S"}}})
    assert r.status_code == 200, r.text
    await world.send(ws, {"type": "track", "event": "Order Completed", "user_id": "sched",
                          "properties": {"revenue": 12}})

    async def member() -> dict[str, Any] | None:
        p = await world.lookup(h, user_id="sched")
        return p if p and p["segments"] == ["just-bought"] else None
    await eventually(member)

    async def scored_and_expired() -> dict[str, Any] | None:
        p = await world.lookup(h, user_id="sched")
        return p if p and p["rfm_segment"] and p["segments"] == [] else None
    p = await eventually(scored_and_expired, timeout=30)
    assert p["rfm_segment"] == "Champions"  # the only customer: top quintile everywhere
    changes = await world.changes(ws, lambda cs: any(c["kind"] == "segment_exited" for c in cs))
    kinds = [c["kind"] for c in changes]
    assert "rfm_changed" in kinds and kinds.index("segment_entered") < kinds.index(
        "segment_exited")
    settings = (await world.http.get("/v1/profile-settings", headers=h)).json()
    assert settings["recomputed_at"] and settings["model"]["customers"] == 1
