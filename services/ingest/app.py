"""Ingest: the Segment-compatible tracking API, publishing to `touchpoint.events`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.middleware import Middleware

from services.ingest import tables
from services.ingest.acceptance import Acceptor
from services.ingest.api.fastpath import TrackingFastPath
from services.ingest.api.keys import router as keys_router
from services.ingest.api.tracking import HANDLERS
from services.ingest.api.tracking import router as tracking_router
from services.ingest.dedupe import Deduper
from shared.http.app import build_app
from shared.runtime import ServiceParts
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    if "producer_linger_ms" not in settings.model_fields_set:
        # Every request waits for its own acks, so lingering only adds latency; the
        # producer still batches concurrent requests while a produce request is in flight.
        settings = settings.model_copy(update={"producer_linger_ms": 0})
    parts = ServiceParts(name="ingest", api_keys=tables.api_keys, seed_kinds=("admin", "write"))
    app = build_app(
        parts, settings, title="Touchpoint ingest",
        description="Segment-compatible HTTP Tracking API. Auth: HTTP Basic with the write key "
                    "as user name and an empty password, or `writeKey` in the body. Write-key "
                    "management (`/v1/keys`) takes `Authorization: Bearer <admin key>`.",
        routers=[tracking_router, keys_router],
        body_exempt=HANDLERS,  # each tracking call is checked, a batch item by item
    )
    shared_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Inside the shared lifespan: the dedupe store starts after the runtime and, on
        # shutdown (in-flight requests drained by then), flushes its acks before it stops.
        # Both wait briefly (1 s, 1.5 s) so `up`'s 10 s stop budget still holds.
        async with shared_lifespan(app):
            deduper = Deduper(settings.database_url)
            await deduper.start()
            acceptor = Acceptor(app.state.runtime, deduper)
            app.state.acceptor = acceptor
            try:
                yield
            finally:
                await acceptor.close()
                await deduper.close()

    app.router.lifespan_context = lifespan
    # Innermost: inside the body-size limit and request metrics added by build_app.
    app.user_middleware.append(Middleware(TrackingFastPath))
    # Browsers post from storefront origins; write keys are public, so any origin may send.
    # No credentials mode: the key travels in the Authorization header or the body.
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["POST", "OPTIONS"],
                       allow_headers=["*"], max_age=86400)
    return app
