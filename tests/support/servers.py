"""Run an ASGI app on a real loopback port inside the test's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import uvicorn
from fastapi import FastAPI

from shared.settings import Settings
from tests.support.net import free_port
from tests.support.ready import wait_ready


@asynccontextmanager
async def serve_app(app: FastAPI, port: int | None = None) -> AsyncIterator[str]:
    """Yields the base URL; the app's lifespan (consumers included) runs for the block."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def serve_all(stack: AsyncExitStack, http: httpx.AsyncClient,
                    settings: Settings) -> dict[str, str]:
    """The four services in this process on `settings`, each ready; their URLs by name.
    They stop when `stack` closes."""
    from services.ingest.app import create_app as ingest_app
    from services.journey.app import create_app as journey_app
    from services.messaging.app import create_app as messaging_app
    from services.profile.app import create_app as profile_app

    urls = {}
    for name, factory in (("ingest", ingest_app), ("profile", profile_app),
                          ("journey", journey_app), ("messaging", messaging_app)):
        urls[name] = await stack.enter_async_context(serve_app(factory(settings)))
    for url in urls.values():
        await wait_ready(http, url, timeout=30)
    return urls
