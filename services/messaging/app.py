"""Messaging: templates, providers, the message log."""

from __future__ import annotations

from fastapi import FastAPI

from services.messaging import tables
from services.messaging.api.routes import router
from services.messaging.consumers import consumers
from shared.http.app import build_app
from shared.runtime import ServiceParts
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    parts = ServiceParts(name="messaging", api_keys=tables.api_keys, outbox=tables.outbox,
                         consumers=consumers)
    return build_app(parts, settings, title="Touchpoint messaging",
                     description="Templates (Liquid), delivery over email/SMS/push/webhooks, the "
                                 "message log. Auth: `Authorization: Bearer <admin key>`.",
                     routers=[router])
