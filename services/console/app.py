"""The console app: FastAPI + Jinja2 pages, htmx fragments, over the services' public APIs.

It has no database and no consumers: /readyz says whether the four services answer /healthz.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.console.api import Api, ApiProblem, ServiceDown, Unauthorized, api_time
from services.console.routes import (
    auth,
    broadcasts,
    customers,
    journeys,
    kpis,
    policy,
    segments,
    templates_page,
)
from services.console.session import COOKIE, SessionCodec
from services.console.settings import ConsoleSettings
from services.console.web import HERE, BadCsrf, NotSignedIn, render
from shared.http.middleware import BodySizeLimit, RequestMetrics
from shared.settings import SERVICES, Settings

# Scripts only from the console itself (no inline code, no eval); inline styles and remote
# images allowed for the rendered emails shown in sandboxed srcdoc iframes (which inherit it).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: https: http:; frame-src 'self'; frame-ancestors 'none'; "
       "form-action 'self'; base-uri 'none'; object-src 'none'")


def create_app(settings: Settings | None = None) -> FastAPI:
    cfg = ConsoleSettings.from_base(settings) if settings else ConsoleSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await app.state.api.close()

    app = FastAPI(title="Touchpoint console", version="0.1.0", lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None,
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.settings = cfg
    app.state.api = Api(cfg.service_urls(), cfg.console_api_timeout_s)
    app.state.doc_cache = {}
    app.state.codec = SessionCodec(cfg.cookie_secret(), cfg.console_idle_hours * 3600)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """Alive: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        """Ready: the four services answer /healthz; 503 with Retry-After otherwise."""
        answers = await asyncio.gather(*(app.state.api.healthy(s) for s in SERVICES))
        checks = dict(zip(SERVICES, answers, strict=True))
        ok = all(answers)
        return JSONResponse({"status": "ready" if ok else "unavailable", "checks": checks},
                            status_code=200 if ok else 503,
                            headers=None if ok else {"Retry-After": "2"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    for module in (auth, journeys, customers, segments, kpis, templates_page, broadcasts,
                   policy):
        app.include_router(module.router)
    _install_handlers(app)

    @app.middleware("http")
    async def server_timing(request: Request,
                            call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        spent: list[float] = []
        token = api_time.set(spent)
        started = time.perf_counter()
        try:
            response = await call_next(request)
        finally:
            api_time.reset(token)
        total = (time.perf_counter() - started) * 1000
        api_ms = sum(spent) * 1000
        response.headers["Server-Timing"] = (f"app;dur={total:.1f}, "
                                             f'api;dur={api_ms:.1f};desc="{len(spent)} calls"')
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    app.add_middleware(BodySizeLimit, max_bytes=cfg.max_body_bytes)
    app.add_middleware(RequestMetrics, service="console")
    return app


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        titles = {404: "Not found", 405: "Method not allowed"}
        return render(request, "error.html", {
            "status": exc.status_code, "title": titles.get(exc.status_code, "Error"),
            "detail": "There is no such page." if exc.status_code == 404 else str(exc.detail)},
            status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def bad_input(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [{"field": ".".join(str(p) for p in e.get("loc", ())[1:]) or "input",
                   "message": str(e.get("msg"))} for e in exc.errors()]
        return render(request, "error.html", {"status": 400, "title": "Invalid input",
                                              "errors": errors}, status_code=400)
    @app.exception_handler(NotSignedIn)
    @app.exception_handler(Unauthorized)
    async def to_sign_in(request: Request, _exc: Exception) -> Response:
        if request.headers.get("hx-request"):  # htmx: a full-page redirect, not a fragment
            response: Response = Response(status_code=204, headers={"HX-Redirect": "/"})
        else:
            response = Response(status_code=303, headers={"Location": "/"})
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.exception_handler(BadCsrf)
    async def bad_csrf(request: Request, _exc: Exception) -> Response:
        return render(request, "error.html", {
            "status": 403, "title": "Form expired",
            "detail": "This form is stale or did not come from the console; reload the page "
                      "and try again."}, status_code=403)

    @app.exception_handler(ServiceDown)
    async def service_down(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceDown)
        return render(request, "error.html", {
            "status": 503, "title": f"The {exc.service} service is not answering",
            "detail": f"{exc.why}. The page will work again once it is back."},
            status_code=503)

    @app.exception_handler(ApiProblem)
    async def api_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiProblem)
        status = exc.status if exc.status in (400, 404, 409, 422) else 400
        return render(request, "error.html", {"status": status, "title": exc.title,
                                              "detail": exc.detail, "errors": exc.errors},
                      status_code=status)
