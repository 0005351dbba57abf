"""Serve the tracking endpoints as plain ASGI, inside the shared middlewares.

FastAPI's routing, dependency and response layers cost about as much CPU per request as
the rest of a single `track` call; this handler skips them for `POST` to the paths in
`tracking.HANDLERS`. It sits innermost, so CORS, the body-size limit and request metrics
still apply. Everything else (GETs, OPTIONS, `/v1/keys`, ...) goes on to FastAPI.
"""

from __future__ import annotations

from types import SimpleNamespace

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from services.ingest.api.tracking import HANDLERS
from shared.http.problems import Problem, problem_response, unexpected_response

_JSON = [(b"content-type", b"application/json")]


class TrackingFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # What RequestMetrics labels the request with (it reads scope["route"].path).
        self.routes = {path: SimpleNamespace(path=path) for path in HANDLERS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = HANDLERS.get(scope["path"]) if scope["type"] == "http" else None
        if handler is None or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        scope["route"] = self.routes[scope["path"]]
        chunks = []
        while True:  # the body-size limit outside raises here if the body is too large
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            result = await handler(scope["app"].state, headers, b"".join(chunks))
        except Problem as exc:
            response = problem_response(exc.status, exc.title, exc.detail, headers=exc.headers,
                                        **exc.extra)
            return await response(scope, receive, send)
        except Exception as exc:
            response = unexpected_response(scope, exc)
            return await response(scope, receive, send)
        body = orjson.dumps(result)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*_JSON, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
