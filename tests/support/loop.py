"""Run a bench helper process's main coroutine on uvloop where it is installed (as
`touchpoint serve` does), else on asyncio's own loop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def run_fast(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main)
