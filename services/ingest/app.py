"""Ingest: the Segment-compatible tracking API, publishing to `touchpoint.events`."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from services.ingest import tables
from services.ingest.api.tracking import router as tracking_router
from shared.http.app import build_app
from shared.runtime import ServiceParts
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    parts = ServiceParts(name="ingest", api_keys=tables.api_keys, seed_kinds=("admin", "write"))
    app = build_app(
        parts, settings, title="Touchpoint ingest",
        description="Segment-compatible HTTP Tracking API. Auth: HTTP Basic with the write key "
                    "as user name and an empty password, or `writeKey` in the body.",
        routers=[tracking_router],
    )
    # Browsers post from storefront origins; write keys are public, so any origin may send.
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["POST", "OPTIONS"],
                       allow_headers=["*"], max_age=86400)
    return app
