"""Build a service's FastAPI app: lifespan owns the runtime; shared routes and handlers."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from shared import tracing
from shared.http.answers import check_declared_answers
from shared.http.auth import AuthFailureThrottle, FailedAuthThrottle
from shared.http.contracts import contract_openapi
from shared.http.dlq import document_consumers
from shared.http.dlq import router as dlq_router
from shared.http.health import router as health_router
from shared.http.middleware import BodySizeLimit, RejectControlCharacters, RequestMetrics
from shared.http.problems import install_problem_handlers
from shared.runtime import ServiceParts, ServiceRuntime
from shared.settings import Settings


def build_app(parts: ServiceParts, settings: Settings, *, title: str, description: str,
              routers: list[APIRouter], body_exempt: Collection[str] = ()) -> FastAPI:
    """The service app; `body_exempt`: paths whose routes check bodies for control
    characters themselves (see RejectControlCharacters)."""
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = ServiceRuntime(parts, settings)
        app.state.runtime = runtime
        await runtime.start()
        # Everything imported and built at start-up lives as long as the process. Moved out
        # of the cyclic collector's reach, a full collection no longer walks it: measured
        # ~50 ms per collection in ingest (its worst accept latencies) and ~0.1 s in messaging.
        gc.freeze()
        try:
            yield
        finally:
            await runtime.stop()

    # FastAPI's native OpenTelemetry asks the OTel SDK for its providers on every request
    # (~9 us, reading env vars) even when none is configured; metrics are Prometheus here.
    app = FastAPI(title=title, description=description, version="0.1.0", lifespan=lifespan,
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.settings = settings
    app.openapi = lambda: document_consumers(  # type: ignore[method-assign]
        contract_openapi(app), parts.name)
    install_problem_handlers(app)
    app.include_router(health_router)
    app.include_router(dlq_router)
    if settings.env == "test":  # every test that calls a route checks its declared answer
        check_declared_answers(routers)
    for router in routers:
        app.include_router(router)
    app.add_middleware(RejectControlCharacters, body_exempt=body_exempt)
    # Added last, so outermost: a throttled source is answered before any body is read.
    app.state.auth_throttle = FailedAuthThrottle(settings.auth_failure_burst,
                                                 settings.auth_failure_per_second)
    app.add_middleware(AuthFailureThrottle, throttle=app.state.auth_throttle)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, service=parts.name)
    if tracing.wanted() or tracing.enabled():  # OTEL_* set: a span per request
        app.add_middleware(tracing.TraceRequests, service=parts.name)
    return app
