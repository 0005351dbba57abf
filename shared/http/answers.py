"""Declared answers enforced: each route's JSON 2xx body is validated against the model its
OpenAPI declares (`responses=answers(Model)`), so the contract cannot drift from the code.

On in the test environment (`TOUCHPOINT_ENV=test`: every test that calls a route checks
its answer); dev and prod skip it, so no path, the tracking ones least, pays for a
buffered body and a validation. A mismatch answers 500 with the
validation errors in the log: a test that calls the route fails.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from shared.http.problems import PROBLEM

log = logging.getLogger(__name__)
Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def check_declared_answers(routers: Iterable[APIRouter]) -> int:
    """Before the routers are included: have every route that declares a JSON 2xx model
    which FastAPI does not validate already (as `response_model=`; a return annotation
    such as `dict[str, Any]` is one, and checks nothing) check its answers. Returns how
    many routes check."""
    checking = 0
    for route in _routes(routers):
        models = {int(status): TypeAdapter(answer["model"])
                  for status, answer in route.responses.items()
                  if str(status).startswith("2") and answer.get("model") is not None
                  and answer["model"] is not route.response_model}
        if models:
            # FastAPI builds each inclusion's handler from `get_route_handler`.
            route.get_route_handler = _checking(route, models)  # type: ignore[method-assign]
            checking += 1
    return checking


def _routes(routers: Iterable[APIRouter]) -> Iterator[APIRoute]:
    for router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute):
                yield route
            elif isinstance(inner := getattr(route, "original_router", None), APIRouter):
                yield from _routes([inner])


def _checking(route: APIRoute, models: dict[int, TypeAdapter[Any]]) -> Callable[[], Handler]:
    build = route.get_route_handler
    name = f"{','.join(sorted(route.methods or ()))} {route.path}"
    return lambda: _checked(build(), models, name)


def _checked(handler: Handler, models: dict[int, TypeAdapter[Any]], name: str) -> Handler:
    async def checked(request: Request) -> Response:
        response = await handler(request)
        model = models.get(response.status_code)
        if model is None or not (response.media_type or "").startswith("application/json"):
            return response
        try:
            model.validate_json(bytes(response.body))
        except ValidationError as exc:
            log.error("%s answered %s not as declared: %s", name, response.status_code,
                      exc.errors(include_url=False, include_input=False))
            return Response(b'{"title":"answer not as declared","status":500}', 500,
                            media_type=PROBLEM)
        return response

    return checked
