"""Journey: customer-journey maps and the step engine."""

from __future__ import annotations

from functools import partial

from fastapi import FastAPI

from services.journey import tables
from services.journey.api.insight import router as insight_router
from services.journey.api.routes import router
from services.journey.broadcasts.api import profile_router as recipient_router
from services.journey.broadcasts.api import router as broadcasts_router
from services.journey.consumers import EngineParts, consumers, workers
from services.journey.policy.api import router as policy_router
from services.journey.settings import JourneySettings
from shared.clock import Clock, SystemClock
from shared.http.app import build_app
from shared.runtime import ServiceParts
from shared.settings import Settings


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    """`clock` is injectable so tests can run quiet hours and time zones on virtual time."""
    settings = settings or Settings()
    clock = clock or SystemClock()
    engine_parts = EngineParts(clock, JourneySettings.from_base(settings))
    parts = ServiceParts(name="journey", api_keys=tables.api_keys, outbox=tables.outbox,
                         consumers=partial(consumers, parts=engine_parts),
                         workers=partial(workers, parts=engine_parts),
                         extras={"directory": engine_parts.directory})
    app = build_app(parts, settings, title="Touchpoint journey",
                    description="Customer-journey maps: stages, entry rules, steps, durable "
                                "timers, guardrails and per-stage numbers. Auth: "
                                "`Authorization: Bearer <admin key>`.",
                    routers=[router, insight_router, policy_router, broadcasts_router,
                             recipient_router])
    app.state.clock = clock
    app.state.directory = engine_parts.directory
    return app
