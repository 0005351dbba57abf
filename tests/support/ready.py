"""Wait for a served app's /readyz (its Postgres and Kafka connected)."""

from __future__ import annotations

import asyncio

import httpx


async def wait_ready(http: httpx.AsyncClient, url: str, timeout: float = 15.0) -> None:
    """Also for a process still starting: a refused connection counts as not ready yet."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            if (await http.get(f"{url}/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{url} not ready after {timeout} s")
        await asyncio.sleep(0.05)


async def ready(url: str, timeout: float = 60) -> None:
    """`wait_ready` with a client of its own (for a subprocess being started or restarted)."""
    async with httpx.AsyncClient() as http:
        await wait_ready(http, url, timeout)
