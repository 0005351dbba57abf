"""Profile: the unified customer record."""

from __future__ import annotations

from fastapi import FastAPI

from services.profile import tables
from services.profile.api.kpis import router as kpis_router
from services.profile.api.profiles import router as profiles_router
from services.profile.api.segments import router as segments_router
from services.profile.api.workspace import router as workspace_router
from services.profile.consumers import consumers, workers
from services.profile.gc_tuning import tune_gc
from shared.http.app import build_app
from shared.runtime import ServiceParts
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    tune_gc()  # the consumer's batches allocate heavily: see gc_tuning
    parts = ServiceParts(name="profile", api_keys=tables.api_keys, outbox=tables.outbox,
                         consumers=consumers, workers=workers)
    return build_app(parts, settings, title="Touchpoint profile",
                     description="Unified customer profiles: identity resolution, traits, "
                                 "computed metrics, RFM, lifecycle, segments, consent, erasure. "
                                 "Auth: `Authorization: Bearer <admin key>`.",
                     routers=[profiles_router, segments_router, workspace_router, kpis_router])
