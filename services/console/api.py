"""The console's only way to the data: the four services' public HTTP APIs, called with the
signed-in admin key over one shared connection pool.

Every call names a route of ROUTES; tests check each (method, path) against the services'
OpenAPI documents, so the console cannot drift from the APIs it proves sufficient.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any
from urllib.parse import quote

import httpx

# name -> (service, method, path). OPTIONAL ones may be missing on a stack (404 -> a panel).
ROUTES: dict[str, tuple[str, str, str]] = {
    "workspace": ("profile", "GET", "/v1/profile-settings"),
    "profiles.search": ("profile", "GET", "/v1/profiles"),
    "profiles.lookup": ("profile", "GET", "/v1/profiles/lookup"),
    "profiles.get": ("profile", "GET", "/v1/profiles/{id}"),
    "profiles.events": ("profile", "GET", "/v1/profiles/{id}/events"),
    "profiles.snapshot": ("profile", "GET", "/v1/profiles/{id}/snapshot"),
    "segments.list": ("profile", "GET", "/v1/segments"),
    "segments.get": ("profile", "GET", "/v1/segments/{key}"),
    "segments.members": ("profile", "GET", "/v1/segments/{key}/members"),
    "journeys.list": ("journey", "GET", "/v1/journeys"),
    "journeys.get": ("journey", "GET", "/v1/journeys/{key}"),
    "journeys.version": ("journey", "GET", "/v1/journeys/{key}/versions/{version}"),
    "journeys.stats": ("journey", "GET", "/v1/journeys/{key}/stats"),
    "journeys.validate": ("journey", "POST", "/v1/journeys/validate"),
    "journeys.save": ("journey", "POST", "/v1/journeys"),
    "journeys.publish": ("journey", "POST", "/v1/journeys/{key}/publish"),
    "journeys.pause": ("journey", "POST", "/v1/journeys/{key}/pause"),
    "journeys.resume": ("journey", "POST", "/v1/journeys/{key}/resume"),
    "journeys.simulate": ("journey", "POST", "/v1/journeys/{key}/simulate"),
    "profile.journeys": ("journey", "GET", "/v1/profiles/{id}/journeys"),
    "profile.trace": ("journey", "GET", "/v1/profiles/{id}/journeys/{key}/trace"),
    "messages.list": ("messaging", "GET", "/v1/messages"),
    "messages.get": ("messaging", "GET", "/v1/messages/{id}"),
    "templates.list": ("messaging", "GET", "/v1/templates"),
    "templates.get": ("messaging", "GET", "/v1/templates/{key}"),
    "templates.put": ("messaging", "PUT", "/v1/templates/{key}"),
    "templates.preview_inline": ("messaging", "POST", "/v1/templates/preview"),
    "templates.test_send": ("messaging", "POST", "/v1/templates/{key}/test-send"),
    "policy.get": ("journey", "GET", "/v1/policy"),
    "policy.put": ("journey", "PUT", "/v1/policy"),
    "kpis": ("profile", "GET", "/v1/kpis"),
    "broadcasts.list": ("journey", "GET", "/v1/broadcasts"),
    "broadcasts.get": ("journey", "GET", "/v1/broadcasts/{key}"),
    "broadcasts.preview": ("journey", "POST", "/v1/broadcasts/{key}/preview"),
    "broadcasts.send": ("journey", "POST", "/v1/broadcasts/{key}/send"),
    "broadcasts.cancel": ("journey", "POST", "/v1/broadcasts/{key}/cancel"),
}
# Landing in parallel with the console: a 404 from these means "not on this stack".
OPTIONAL = {"kpis", "templates.test_send", "broadcasts.list", "broadcasts.get",
            "broadcasts.preview", "broadcasts.send", "broadcasts.cancel"}

# Time spent in API calls by the current request (Server-Timing, bench/console.py).
api_time: ContextVar[list[float] | None] = ContextVar("console_api_time", default=None)


class ServiceDown(Exception):
    """A service did not answer (or answered 5xx): the page is a 503."""

    def __init__(self, service: str, why: str) -> None:
        super().__init__(f"{service}: {why}")
        self.service, self.why = service, why


class Unauthorized(Exception):
    """The key was refused (revoked since sign-in): back to the sign-in page."""


class ApiProblem(Exception):
    """A 4xx from a service, with its problem details."""

    def __init__(self, status: int, body: Any) -> None:
        problem = body if isinstance(body, dict) else {}
        self.status = status
        self.title = str(problem.get("title") or httpx.codes.get_reason_phrase(status))
        self.detail = str(problem.get("detail") or "")
        errors = problem.get("errors") or problem.get("detail")
        self.errors: list[dict[str, Any]] = (
            [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else [])
        super().__init__(f"{status} {self.title}: {self.detail}")


class Api:
    def __init__(self, urls: dict[str, str], timeout_s: float,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.urls = urls
        # trust_env=False: no proxy from the environment between us and the services.
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(1.0, timeout_s)), trust_env=False,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            headers={"User-Agent": "touchpoint-console"}, transport=transport)

    async def close(self) -> None:
        await self.http.aclose()

    async def call(self, admin_key: str, route: str, /, *,
                   params: dict[str, Any] | None = None, json: Any = None,
                   **path: str | int) -> Any:
        """Call ROUTES[route] with the path parameters filled in; the JSON answer."""
        service, method, template = ROUTES[route]
        url = self.urls[service] + template.format(
            **{k: quote(str(v), safe="") for k, v in path.items()})
        query = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        started = time.perf_counter()
        try:
            response = await self.http.request(method, url, params=query, json=json,
                                               headers={"Authorization": f"Bearer {admin_key}"})
        except httpx.TimeoutException:
            raise ServiceDown(service, "timed out") from None
        except httpx.TransportError as exc:
            raise ServiceDown(service, type(exc).__name__) from None
        finally:
            spent = api_time.get()
            if spent is not None:
                spent.append(time.perf_counter() - started)
        if response.status_code >= 500:
            raise ServiceDown(service, f"answered {response.status_code}")
        if response.status_code == 401:
            raise Unauthorized()
        body = _json(response)
        if response.status_code >= 400:
            raise ApiProblem(response.status_code, body)
        return body

    async def healthy(self, service: str) -> bool:
        try:
            response = await self.http.get(f"{self.urls[service]}/healthz", timeout=1.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200


def _json(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return {"detail": response.text[:500]}
