"""Profile: the unified customer record."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI

from services.profile import recompute, tables
from services.profile.api.kpis import router as kpis_router
from services.profile.api.profiles import router as profiles_router
from services.profile.api.segments import router as segments_router
from services.profile.api.workspace import router as workspace_router
from services.profile.consumers import consumers
from services.profile.gc_tuning import tune_gc
from services.profile.settings import ProfileSettings
from shared.db.retention import RetentionWorker, inbox_prune
from shared.http.app import build_app
from shared.runtime import ServiceParts, ServiceRuntime, Worker
from shared.settings import Settings


def _workers(rt: ServiceRuntime) -> list[Worker]:
    interval = ProfileSettings.from_base(rt.settings).profile_recompute_interval_s
    keep = timedelta(hours=rt.settings.inbox_retention_hours)
    return [recompute.RecomputeSchedule(rt.engine, rt.settings, rt.relay, interval),
            RetentionWorker(rt.engine, {"inbox": inbox_prune(tables.inbox, keep)},
                            rt.settings.retention_interval_s)]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    tune_gc()  # the consumer's batches allocate heavily: see gc_tuning
    parts = ServiceParts(name="profile", api_keys=tables.api_keys, outbox=tables.outbox,
                         consumers=consumers, workers=_workers)
    return build_app(parts, settings, title="Touchpoint profile",
                     description="Unified customer profiles: identity resolution, traits, "
                                 "computed metrics, RFM, lifecycle, segments, consent, erasure. "
                                 "Auth: `Authorization: Bearer <admin key>`.",
                     routers=[profiles_router, segments_router, workspace_router, kpis_router])
