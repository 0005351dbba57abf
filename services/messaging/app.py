"""Messaging: templates, channels and providers, delivery, tracking, the message log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI

from services.messaging import tables
from services.messaging.api import channels, code_pools, messages, snippets, templates, tracking
from services.messaging.consumers import consumers, workers
from services.messaging.parts import Messaging
from services.messaging.settings import MessagingSettings
from shared.http.app import build_app
from shared.runtime import ServiceParts
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    msettings = MessagingSettings.from_base(settings) if settings else MessagingSettings()
    messaging = Messaging(msettings)
    parts = ServiceParts(name="messaging", api_keys=tables.api_keys, outbox=tables.outbox,
                         consumers=partial(consumers, m=messaging),
                         workers=partial(workers, m=messaging))
    app = build_app(parts, msettings, title="Touchpoint messaging",
                    description="Templates (Liquid), delivery over email/SMS/push/webhooks with "
                                "consent checked at send time, open/click tracking, one-click "
                                "unsubscribe, the message log. Management API auth: "
                                "`Authorization: Bearer <admin key>`; tracking, unsubscribe "
                                "and provider status endpoints are public and signed.",
                    routers=[templates.router, snippets.router, code_pools.router,
                             channels.router, messages.router, tracking.router])
    app.state.messaging = messaging
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: FastAPI) -> AsyncIterator[None]:
        try:
            async with inner(app_):
                yield
        finally:
            await messaging.close()  # after the consumers stopped: no send in flight

    app.router.lifespan_context = lifespan
    return app
