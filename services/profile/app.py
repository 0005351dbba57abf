"""Profile: the unified customer record."""

from __future__ import annotations

from fastapi import FastAPI

from services.profile import tables
from services.profile.api.routes import router
from services.profile.consumers import consumers
from shared.http.app import build_app
from shared.runtime import ServiceParts
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    parts = ServiceParts(name="profile", api_keys=tables.api_keys, outbox=tables.outbox,
                         consumers=consumers)
    return build_app(parts, settings, title="Touchpoint profile",
                     description="Unified customer profiles. Auth: `Authorization: Bearer "
                                 "<admin key>`.", routers=[router])
