"""Pure ASGI middleware (cheaper than BaseHTTPMiddleware on the hot path)."""

from __future__ import annotations

import re
import time
from collections.abc import Collection
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import metrics
from shared.contracts.storable import CONTROL_MESSAGE, JSON_CONTROL, has_control


class _HttpMiddleware:
    """Pure ASGI middleware of HTTP requests: other scopes (lifespan) pass through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        return await self.http(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class BodySizeLimit(_HttpMiddleware):
    """413 problem+json when the body is larger than `max_bytes` (declared or streamed)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _too_large(send, self.max_bytes)
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _too_large(send, self.max_bytes)


class _TooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = orjson.dumps({"type": "about:blank", "title": "Payload too large", "status": 413,
                         "detail": f"request body exceeds {limit} bytes"})
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/problem+json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class RequestMetrics(_HttpMiddleware):
    """Counts and times requests per route template (not raw path: bounded label values)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        super().__init__(app)
        self.service = service

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        status = {"code": 500}

        async def record_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route: Any = scope.get("route")
            path = getattr(route, "path", "unmatched")
            metrics.HTTP_SECONDS.labels(self.service, path).observe(time.perf_counter() - start)
            metrics.HTTP_REQUESTS.labels(self.service, scope["method"], path,
                                         str(status["code"])).inc()


_RAW_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_CHECKED_BODIES = (b"application/json", b"application/x-www-form-urlencoded",
                   b"application/merge-patch+json", b"application/problem+json")


class RejectControlCharacters(_HttpMiddleware):
    """400 problem+json for NUL or another C0 control (tab, newline, CR aside) in the path,
    the query or a JSON/form body: the rule of `shared.contracts.storable`, applied before
    any route runs, so no such value reaches Postgres (which cannot store NUL) or a log.

    `body_exempt` paths validate their own bodies (ingest's batch rejects item by item).
    """

    def __init__(self, app: ASGIApp, body_exempt: Collection[str] = ()) -> None:
        super().__init__(app)
        self.body_exempt = frozenset(body_exempt)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if has_control(scope["path"]):
            return await _bad_input(send, "path")
        query: bytes = scope.get("query_string", b"")
        if query and _RAW_CONTROL.search(unquote_to_bytes(query.replace(b"+", b" "))):
            return await _bad_input(send, "query")
        if scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE") or \
                scope["path"] in self.body_exempt:
            return await self.app(scope, receive, send)
        content_type = dict(scope["headers"]).get(b"content-type", b"").split(b";")[0].strip()
        # No content type: FastAPI reads such a body as JSON, so it is checked as JSON.
        if content_type and content_type.lower() not in _CHECKED_BODIES:
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if content_type.lower().endswith(b"urlencoded"):
            found = _RAW_CONTROL.search(unquote_to_bytes(body.replace(b"+", b" ")))
        else:
            found = JSON_CONTROL.search(body)
        if found:
            return await _bad_input(send, "body")
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _bad_input(send: Send, where: str) -> None:
    message = CONTROL_MESSAGE
    body = orjson.dumps({"type": "about:blank", "title": "Invalid request", "status": 400,
                         "detail": f"{where}: {message}",
                         "errors": [{"field": where, "message": message}]})
    await send({"type": "http.response.start", "status": 400,
                "headers": [(b"content-type", b"application/problem+json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
