"""/healthz, /readyz and /metrics for every service."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str  # "ready" | "unavailable"
    checks: dict[str, bool]


@router.get("/healthz", responses={200: {"model": Health}})
async def healthz() -> dict[str, str]:
    """Alive: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={200: {"model": Readiness},
                                    503: {"model": Readiness, "description": "Not ready."}})
async def readyz(request: Request) -> JSONResponse:
    """Ready: Postgres and Kafka reachable; 503 with Retry-After otherwise."""
    checks = await request.app.state.runtime.ready()
    ok = all(checks.values())
    return JSONResponse(
        {"status": "ready" if ok else "unavailable", "checks": checks},
        status_code=200 if ok else 503,
        headers=None if ok else {"Retry-After": "2"},
    )


@router.get("/metrics", response_class=PlainTextResponse)
async def prometheus_metrics() -> Response:
    """Prometheus metrics."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
