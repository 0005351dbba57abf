"""The journey list's workspace-wide figures (`include=stats`, `include=goal`), kept per
process so a large workspace is not scanned on every request.

Both figures read every instance of the workspace (distinct customers, goal arms), which
takes seconds at hundreds of thousands of instances. A small workspace (under `LARGE`
instances at its last count) is computed on each request, so its figures are exact. A large
one is served from the last computation while a background task recomputes it every
`REFRESH_S` for as long as someone asked within `WATCH_S` (one task per workspace and
figure): the answer is at most `STALE_S` old (older, the request computes fresh figures).
The console refreshes its counts every 5 s; the per-journey `/stats` stays exact.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

LARGE = 20_000  # instances; below this, figures are computed on every request
REFRESH_S = 2.0  # pause between a large workspace's background computations...
WATCH_S = 15.0  # ...which go on while someone asked this recently
STALE_S = 5.0  # figures are served while younger than this

# compute() -> (figures, instances counted)
Compute = Callable[[], Awaitable[tuple[dict[str, Any], int]]]


@dataclass
class _Entry:
    figures: dict[str, Any] | None = None
    size: int = 0
    started: float = 0.0  # monotonic time the figures' computation began
    asked: float = 0.0  # monotonic time of the last request
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Summaries:
    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], _Entry] = {}

    async def get(self, workspace: str, figure: str, compute: Compute) -> dict[str, Any]:
        entry = self._entries.setdefault((workspace, figure), _Entry())
        now = entry.asked = time.monotonic()
        if entry.figures is None or entry.size < LARGE or now - entry.started >= STALE_S:
            await self._run(entry, compute, now)
        if entry.size >= LARGE and entry.task is None:
            entry.task = asyncio.create_task(self._refresh(entry, compute))
        assert entry.figures is not None
        return entry.figures

    @staticmethod
    async def _run(entry: _Entry, compute: Compute, started: float) -> None:
        figures, size = await compute()
        if started >= entry.started:  # a slower, older computation never overwrites
            entry.figures, entry.size, entry.started = figures, size, started

    async def _refresh(self, entry: _Entry, compute: Compute) -> None:
        try:
            while True:
                await asyncio.sleep(REFRESH_S)
                await self._run(entry, compute, time.monotonic())
                if time.monotonic() - entry.asked > WATCH_S or entry.size < LARGE:
                    return
        except Exception as exc:  # the last figures stay; the next request starts a new task
            log.warning("journey summary refresh failed (%s)", type(exc).__name__)
        finally:
            entry.task = None


# One cache per engine (so per app): two apps in one process (tests) may share workspace ids
# over different databases or schemas.
_caches: weakref.WeakKeyDictionary[AsyncEngine, Summaries] = weakref.WeakKeyDictionary()


def summaries(engine: AsyncEngine) -> Summaries:
    cache = _caches.get(engine)
    if cache is None:
        cache = _caches[engine] = Summaries()
    return cache
