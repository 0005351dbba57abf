"""The four services and the web console served on loopback ports, for console tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import httpx
from fastapi import FastAPI

from shared.settings import Settings
from shared.testing.ready import wait_ready
from shared.testing.servers import serve_app


@dataclass
class ConsoleStack:
    urls: dict[str, str]  # ingest, profile, journey, messaging, console
    apps: dict[str, FastAPI]

    @property
    def console(self) -> str:
        return self.urls["console"]


@asynccontextmanager
async def console_stack(settings: Settings) -> AsyncIterator[ConsoleStack]:
    from services.console.app import create_app as console_app
    from services.console.settings import ConsoleSettings
    from services.ingest.app import create_app as ingest_app
    from services.journey.app import create_app as journey_app
    from services.journey.settings import JourneySettings
    from services.messaging.app import create_app as messaging_app
    from services.profile.app import create_app as profile_app

    async with AsyncExitStack() as stack, httpx.AsyncClient(timeout=10) as http:
        urls: dict[str, str] = {}
        apps: dict[str, FastAPI] = {}
        for name, factory in (("ingest", ingest_app), ("profile", profile_app),
                              ("messaging", messaging_app)):
            apps[name] = factory(settings)
            urls[name] = await stack.enter_async_context(serve_app(apps[name]))
        # Journey asks messaging and profile about templates and segments (broadcasts).
        apps["journey"] = journey_app(JourneySettings(
            **settings.model_dump(), messaging_url=urls["messaging"],
            profile_url=urls["profile"]))
        urls["journey"] = await stack.enter_async_context(serve_app(apps["journey"]))
        for url in urls.values():
            await wait_ready(http, url, timeout=30)
        console_settings = ConsoleSettings.model_validate(
            settings.model_dump() | {f"{n}_url": u for n, u in urls.items()})
        apps["console"] = console_app(console_settings)
        urls["console"] = await stack.enter_async_context(serve_app(apps["console"]))
        await wait_ready(http, urls["console"], timeout=10)
        yield ConsoleStack(urls, apps)
