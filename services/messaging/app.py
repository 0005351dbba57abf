"""Messaging: templates, channels and providers, delivery, tracking, the message log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

from services.messaging import tables
from services.messaging.api import channels, code_pools, messages, snippets, templates, tracking
from services.messaging.bootstrap import Messaging
from services.messaging.consumers import consumers
from services.messaging.retries import RetrySweeper
from services.messaging.settings import MessagingSettings
from shared.db.retention import RetentionWorker, inbox_prune
from shared.http.app import build_app
from shared.runtime import ServiceParts, ServiceRuntime, Worker
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    msettings = MessagingSettings.from_base(settings) if settings else MessagingSettings()
    messaging = Messaging(msettings)

    def consumer_table(rt: ServiceRuntime) -> list:  # type: ignore[type-arg]
        return consumers(rt, messaging)

    def workers(rt: ServiceRuntime) -> list[Worker]:
        # Only messaging.profile-changes uses the inbox; sends dedupe on idempotency keys.
        keep = timedelta(hours=rt.settings.inbox_retention_hours)
        return [RetentionWorker(rt.engine, {"inbox": inbox_prune(tables.inbox, keep)},
                                rt.settings.retention_interval_s),
                RetrySweeper(rt, messaging)]

    parts = ServiceParts(name="messaging", api_keys=tables.api_keys, outbox=tables.outbox,
                         consumers=consumer_table, workers=workers)
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
