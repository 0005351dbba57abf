"""RFC 9457 problem+json for every error, so clients always get the same shape."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.kafka.errors import is_transient
from shared.logging import exception_summary

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"


class Problem(Exception):
    """Raise to answer with a problem document."""

    def __init__(self, status: int, title: str, detail: str | None = None, *,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail or title)
        self.status, self.title, self.detail = status, title, detail
        self.headers, self.extra = headers, extra


def problem_response(status: int, title: str, detail: str | None = None, *,
                     headers: Mapping[str, str] | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM)


def field_path(loc: Sequence[Any]) -> str:
    """A pydantic error location as the client's dotted field path: without FastAPI's `body`
    prefix and without the tags pydantic puts on a union's members
    (`wait.function-after[_duration(), timedelta]` is the client's `wait`)."""
    return ".".join(str(p) for p in loc if p != "body" and "[" not in str(p))


def field_errors(exc: RequestValidationError | ValidationError) -> list[dict[str, str]]:
    """Pydantic errors as [{field, message}], without echoing the input back."""
    return [{"field": field_path(err.get("loc", ())) or "body", "message": str(err.get("msg"))}
            for err in exc.errors()]


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.title, exc.detail, headers=exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = field_errors(exc)
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return problem_response(400, "Invalid request", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {401: "Unauthorized", 403: "Forbidden", 404: "Not found",
                 405: "Method not allowed", 413: "Payload too large"}.get(exc.status_code, "Error")
        detail = exc.detail if isinstance(exc.detail, str) else None
        return problem_response(exc.status_code, title, detail, headers=exc.headers)

    # Database errors get handlers of their own: a refused value is the client's 400, and
    # one handled here is not re-raised to the server (which would log it as a crash).
    for database_error in (sqlalchemy.exc.DBAPIError, asyncpg.exceptions.PostgresError,
                           asyncpg.exceptions.InterfaceError):
        app.add_exception_handler(database_error, _database)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return unexpected_response(request.scope, exc)


async def _database(request: Request, exc: Exception) -> JSONResponse:
    return unexpected_response(request.scope, exc)


def route_of(scope: Mapping[str, Any]) -> str:
    """The route template (`/v1/profiles/{profile_id}`), never the raw path: that carries
    the values (ids, emails) a log must not."""
    return str(getattr(scope.get("route"), "path", "unmatched"))


def unexpected_response(scope: Mapping[str, Any], exc: BaseException) -> JSONResponse:
    """An exception no route handled: 503 when a dependency is away, 400 when the database
    refused a value as data (NUL in text, a number out of range), else 500. Logged as type,
    route and stack frames: never the request's values or the SQL parameters."""
    route = route_of(scope)
    if is_transient(exc):
        log.warning("dependency unavailable on %s: %s", route, type(exc).__name__)
        return problem_response(503, "Service unavailable",
                                "A dependency (database or broker) is unreachable; retry.",
                                headers={"Retry-After": "2"})
    if is_data_error(exc):
        log.info("database refused a value on %s: %s", route, type(exc).__name__)
        return problem_response(400, "Invalid request", "a value cannot be stored (invalid "
                                "characters, or a number or date out of range)",
                                errors=[{"field": "body", "message": "value cannot be stored"}])
    log.error("unhandled %s on %s %s: %s", type(exc).__name__, scope.get("method"), route,
              exception_summary(exc))
    return problem_response(500, "Internal error")


def is_data_error(exc: BaseException) -> bool:
    """Did Postgres or asyncpg refuse a value as data (SQLSTATE class 22, or asyncpg's
    client-side encoding check)? Then the request's input was wrong, not the service."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return False
        if isinstance(seen, asyncpg.exceptions.DataError | sqlalchemy.exc.DataError):
            return True
        sqlstate = getattr(seen, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith("22"):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False
