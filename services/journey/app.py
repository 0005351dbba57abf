"""Journey: customer-journey maps and the step engine."""

from __future__ import annotations

from fastapi import FastAPI

from services.journey import tables
from services.journey.api.routes import router
from services.journey.consumers import consumers
from shared.http.app import build_app
from shared.runtime import ServiceParts
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    parts = ServiceParts(name="journey", api_keys=tables.api_keys, outbox=tables.outbox,
                         consumers=consumers)
    return build_app(parts, settings, title="Touchpoint journey",
                     description="Customer-journey maps: stages, entry rules, steps. Auth: "
                                 "`Authorization: Bearer <admin key>`.", routers=[router])
