"""The journey list's per-process figures: exact for a small workspace, at most STALE_S old
for a large one, recomputed one at a time in the background."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from services.journey.api import summary
from services.journey.api.summary import Summaries


class Counter:
    """A computation whose n-th run answers {"n": n} for a workspace of `size` instances."""

    def __init__(self, size: int) -> None:
        self.size, self.runs, self.fail = size, 0, False
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> tuple[dict[str, Any], int]:
        self.runs += 1
        run = self.runs
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("database gone")
        return {"n": run}, self.size


async def settle(cache: Summaries) -> None:
    for entry in list(cache._entries.values()):
        if entry.task is not None:
            await entry.task


async def test_a_small_workspace_is_computed_on_every_request() -> None:
    cache, compute = Summaries(), Counter(size=summary.LARGE - 1)
    assert [(await cache.get("ws", "stats", compute))["n"] for _ in range(3)] == [1, 2, 3]


async def test_a_large_workspace_is_served_from_the_last_figures_while_young(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(summary, "REFRESH_S", 60.0)
    cache, compute = Summaries(), Counter(size=summary.LARGE)
    assert (await cache.get("ws", "stats", compute))["n"] == 1
    assert (await cache.get("ws", "stats", compute))["n"] == 1
    assert compute.runs == 1
    # Workspaces and figures are kept apart.
    assert (await cache.get("other", "stats", compute))["n"] == 2
    assert (await cache.get("ws", "goal", compute))["n"] == 3


async def test_a_large_workspace_refreshes_in_the_background_one_at_a_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(summary, "REFRESH_S", 0.0)
    cache, compute = Summaries(), Counter(size=summary.LARGE)
    assert (await cache.get("ws", "stats", compute))["n"] == 1
    compute.gate = asyncio.Event()
    # Old enough to refresh, young enough to serve: the request does not wait.
    assert (await cache.get("ws", "stats", compute))["n"] == 1
    assert (await cache.get("ws", "stats", compute))["n"] == 1
    await asyncio.sleep(0)
    assert compute.runs == 2  # one refresh in flight, not one per request
    compute.gate.set()
    await settle(cache)
    assert (await cache.get("ws", "stats", compute))["n"] == 2


async def test_figures_older_than_stale_s_wait_for_the_fresh_ones(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(summary, "REFRESH_S", 0.0)
    monkeypatch.setattr(summary, "STALE_S", 0.0)
    cache, compute = Summaries(), Counter(size=summary.LARGE)
    assert (await cache.get("ws", "stats", compute))["n"] == 1
    assert (await cache.get("ws", "stats", compute))["n"] == 2


async def test_a_failed_refresh_keeps_the_last_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(summary, "REFRESH_S", 0.0)
    cache, compute = Summaries(), Counter(size=summary.LARGE)
    assert (await cache.get("ws", "stats", compute))["n"] == 1
    compute.fail = True
    assert (await cache.get("ws", "stats", compute))["n"] == 1
    await settle(cache)
    compute.fail = False
    assert (await cache.get("ws", "stats", compute))["n"] == 1  # starts the next refresh
    await settle(cache)
    assert (await cache.get("ws", "stats", compute))["n"] == 3


def test_each_engine_has_its_own_figures() -> None:
    one = create_async_engine("postgresql+asyncpg://postgres@127.0.0.1/one")
    two = create_async_engine("postgresql+asyncpg://postgres@127.0.0.1/two")
    assert summary.summaries(one) is summary.summaries(one)
    assert summary.summaries(one) is not summary.summaries(two)
