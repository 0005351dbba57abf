"""`Authorization: Bearer <admin key>` for the management APIs, and the throttle on failed
authentication per source address.

Throttle: every 401 a source gets takes a token from its bucket (`burst` tokens, refilled at
`per_second`). While the bucket is empty, that source's requests are answered 429 with
Retry-After by `AuthFailureThrottle`, before routing, body reading or key hashing, so a
flood of wrong keys costs a dict lookup each and leaves the key cache and the database to
the other clients. The source is the peer address uvicorn reports (behind a proxy, start it
with `--proxy-headers --forwarded-allow-ips` so that is the client's).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Annotated

import orjson
from fastapi import Depends, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.auth import Principal
from shared.http.problems import Problem

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="touchpoint"'}
# Probes are never throttled: an orchestrator on a throttled address must still see health.
_UNTHROTTLED = frozenset({"/healthz", "/readyz", "/metrics"})


async def require_admin(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(401, "Unauthorized", "send Authorization: Bearer <admin key>",
                      headers=_CHALLENGE)
    principal: Principal | None = await request.app.state.runtime.keyring.lookup(
        token.strip(), "admin")
    if principal is None:
        raise Problem(401, "Unauthorized", "unknown or revoked admin key", headers=_CHALLENGE)
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]


class FailedAuthThrottle:
    """Token buckets of failed authentications, one per source address (pure, in-process)."""

    def __init__(self, burst: int, per_second: float, *,
                 clock: Callable[[], float] = time.monotonic, max_sources: int = 50_000) -> None:
        self.burst, self.rate, self.clock = float(burst), per_second, clock
        self.max_sources = max_sources
        self._buckets: dict[str, tuple[float, float]] = {}  # source -> (tokens, stamp)

    def _tokens(self, source: str, now: float) -> float:
        entry = self._buckets.get(source)
        if entry is None:
            return self.burst
        tokens, stamp = entry
        return min(self.burst, tokens + (now - stamp) * self.rate)

    def retry_after(self, source: str) -> float:
        """Seconds until `source` may try again; 0 when it may now."""
        if source not in self._buckets:
            return 0.0
        tokens = self._tokens(source, self.clock())
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def failed(self, source: str) -> None:
        """Count one failed authentication of `source`."""
        now = self.clock()
        if len(self._buckets) >= self.max_sources and source not in self._buckets:
            self._forget_refilled(now)
        self._buckets[source] = (self._tokens(source, now) - 1, now)

    def _forget_refilled(self, now: float) -> None:
        # A full bucket is the same as no bucket. If every source is still draining (a
        # spread-out attack), the oldest half goes: memory stays bounded either way.
        full = [s for s in self._buckets if self._tokens(s, now) >= self.burst]
        for source in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[source]


class AuthFailureThrottle:
    """Pure ASGI: 429 + Retry-After for a source whose failed-auth bucket is empty; counts
    each 401 answered to a source."""

    def __init__(self, app: ASGIApp, throttle: FailedAuthThrottle) -> None:
        self.app, self.throttle = app, throttle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _UNTHROTTLED:
            return await self.app(scope, receive, send)
        client = scope.get("client")
        source = client[0] if client else ""
        if (wait := self.throttle.retry_after(source)) > 0:
            return await _too_many(send, wait)

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                self.throttle.failed(source)
            await send(message)

        await self.app(scope, receive, counting_send)


async def _too_many(send: Send, wait: float) -> None:
    seconds = max(1, math.ceil(wait))
    body = orjson.dumps({"type": "about:blank", "title": "Too many failed authentications",
                         "status": 429,
                         "detail": f"too many failed authentications from this address; "
                                   f"retry after {seconds} s"})
    await send({"type": "http.response.start", "status": 429,
                "headers": [(b"content-type", b"application/problem+json"),
                            (b"retry-after", str(seconds).encode()),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
