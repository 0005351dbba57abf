"""The journey list's per-process figures: exact for a small workspace, at most STALE_S old
for a large one, recomputed by one background task while someone asks."""

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


class Figures:
    """One test's own cache and computation; `n()` is the n its request is answered."""

    def __init__(self, size: int) -> None:
        self.cache, self.compute = Summaries(), Counter(size)

    async def n(self, workspace: str = "ws", figure: str = "stats") -> int:
        return int((await self.cache.get(workspace, figure, self.compute))["n"])

    async def settle(self) -> None:
        for entry in list(self.cache._entries.values()):
            if entry.task is not None:
                await entry.task

    def cancel_refreshes(self) -> None:
        """Every large entry has its background refresh; stop them (REFRESH_S is long)."""
        for entry in self.cache._entries.values():
            assert entry.task is not None
            entry.task.cancel()


@pytest.fixture(autouse=True)
def one_refresh_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """The background task computes once, then stops (nobody asked within WATCH_S = 0)."""
    monkeypatch.setattr(summary, "REFRESH_S", 0.0)
    monkeypatch.setattr(summary, "WATCH_S", -1.0)


@pytest.fixture
def large() -> Figures:
    return Figures(size=summary.LARGE)


async def test_a_small_workspace_is_computed_on_every_request() -> None:
    small = Figures(size=summary.LARGE - 1)
    assert [await small.n() for _ in range(3)] == [1, 2, 3]
    assert all(entry.task is None for entry in small.cache._entries.values())


async def test_a_large_workspace_is_served_from_the_last_figures(
        monkeypatch: pytest.MonkeyPatch, large: Figures) -> None:
    monkeypatch.setattr(summary, "REFRESH_S", 60.0)
    assert [await large.n(), await large.n()] == [1, 1]
    assert large.compute.runs == 1
    # Workspaces and figures are kept apart.
    assert [await large.n("other"), await large.n("ws", "goal")] == [2, 3]
    large.cancel_refreshes()


async def test_a_large_workspace_refreshes_in_the_background_one_task_at_a_time(
        large: Figures) -> None:
    assert await large.n() == 1
    large.compute.gate = gate = asyncio.Event()
    # The requests do not wait for the refresh, and start no second one.
    assert [await large.n(), await large.n()] == [1, 1]
    await asyncio.sleep(0.01)
    assert large.compute.runs == 2
    gate.set()
    await large.settle()
    assert await large.n() == 2
    await large.settle()


async def test_the_refresh_goes_on_while_someone_watches(
        monkeypatch: pytest.MonkeyPatch, large: Figures) -> None:
    monkeypatch.setattr(summary, "WATCH_S", 60.0)
    await large.n()
    await asyncio.sleep(0.05)
    assert large.compute.runs > 3  # every REFRESH_S (0 here) without any further request
    monkeypatch.setattr(summary, "WATCH_S", -1.0)
    await large.settle()  # and stops once nobody asked within WATCH_S
    assert await large.n() == large.compute.runs
    await large.settle()


async def test_figures_older_than_stale_s_are_computed_for_the_request(
        monkeypatch: pytest.MonkeyPatch, large: Figures) -> None:
    monkeypatch.setattr(summary, "REFRESH_S", 60.0)
    monkeypatch.setattr(summary, "STALE_S", 0.0)
    assert [await large.n(), await large.n()] == [1, 2]
    large.cancel_refreshes()


async def test_a_failed_refresh_keeps_the_last_figures(large: Figures) -> None:
    assert await large.n() == 1
    large.compute.fail = True
    await large.settle()
    large.compute.fail = False
    assert await large.n() == 1  # and starts the next task
    await large.settle()
    assert await large.n() == 3
    await large.settle()


def test_each_engine_has_its_own_figures() -> None:
    one = create_async_engine("postgresql+asyncpg://postgres@127.0.0.1/one")
    two = create_async_engine("postgresql+asyncpg://postgres@127.0.0.1/two")
    assert summary.summaries(one) is summary.summaries(one)
    assert summary.summaries(one) is not summary.summaries(two)
