"""What journey asks the other services over HTTP, cached with a short TTL: a template's
channel, category and topic (messaging), segment keys and the workspace time zone
(profile). Never their tables. An unknown template or segment is an error, not an empty
audience.

The caller's admin key is forwarded (one admin key per workspace is registered in every
service, as the CLI assumes). Without one (the engine's batches, the broadcast worker),
the workspace's own key from TOUCHPOINT_SERVICE_KEYS, or for the default workspace
TOUCHPOINT_SERVICE_KEY (else the bootstrap admin key): an admin key answers for its own
workspace only, so a workspace without a key of its own gets the defaults rather than
another workspace's conventions. Profile names the workspace it answered for, and an
answer for another one is refused (a key filed under the wrong workspace).
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import quote

import httpx

from services.journey.domain.policy import TemplateMeta
from services.journey.settings import JourneySettings
from shared.http.problems import Problem

log = logging.getLogger(__name__)


class Unknown(Exception):
    """The other service answered 404: no such template or segment."""


class NoKey(Problem):
    """No caller's key and no key of journey's own for this workspace."""

    def __init__(self, workspace_id: str) -> None:
        super().__init__(503, "Not configured", f"journey has no key for workspace "
                                                f"'{workspace_id}' (TOUCHPOINT_SERVICE_KEYS)")


class Directory:
    def __init__(self, settings: JourneySettings) -> None:
        self.settings = settings
        self._cache: dict[tuple[str, ...], tuple[float, Any]] = {}
        self._keyless: set[str] = set()  # warned once each
        self._http: httpx.AsyncClient | None = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=5)
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def _get(self, base: str | None, service: str, path: str, workspace_id: str,
                   key: str | None) -> Any:
        if not base:
            raise Problem(503, "Not configured", f"TOUCHPOINT_{service.upper()}_URL is not set: "
                                                 f"journey cannot ask {service}")
        cache_key = (service, workspace_id, path)
        hit = self._cache.get(cache_key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        token = key or self.service_key(workspace_id)
        if token is None:
            raise NoKey(workspace_id)
        try:
            r = await self._client().get(f"{base.rstrip('/')}{path}",
                                         headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            raise Problem(503, "Unavailable", f"{service} did not answer") from exc
        if r.status_code in (400, 404):  # a key the other service refuses names nothing
            raise Unknown(path)
        if r.status_code != 200:
            raise Problem(503, "Unavailable", f"{service} answered {r.status_code}")
        body = r.json()
        self._cache[cache_key] = (time.monotonic() + self.settings.directory_ttl_s, body)
        return body

    def service_key(self, workspace_id: str) -> str | None:
        """The key journey itself calls with for this workspace (None: it has none)."""
        own = self.settings.service_keys.get(workspace_id)
        if own is None and workspace_id == self.settings.default_workspace:
            return self.settings.service_key or self.settings.bootstrap_admin_key
        return own

    async def template(self, workspace_id: str, key: str, *, caller: str | None = None
                       ) -> TemplateMeta:
        body = await self._get(self.settings.messaging_url, "messaging",
                               f"/v1/templates/{quote(key, safe='')}", workspace_id, caller)
        return TemplateMeta(body["channel"], body.get("category") or "marketing",
                            body.get("topic"))

    async def segment_exists(self, workspace_id: str, key: str, *, caller: str | None = None
                             ) -> bool:
        try:
            await self._get(self.settings.profile_url, "profile",
                            f"/v1/segments/{quote(key, safe='')}", workspace_id, caller)
        except Unknown:
            return False
        return True

    async def _settings(self, workspace_id: str, caller: str | None) -> dict[str, Any]:
        """Profile's workspace settings (cached); {} when profile is not configured."""
        if not self.settings.profile_url:
            return {}
        cache_key = ("profile", workspace_id, "/v1/profile-settings")
        try:
            body = await self._get(self.settings.profile_url, "profile",
                                   "/v1/profile-settings", workspace_id, caller)
        except NoKey:
            if workspace_id not in self._keyless:
                self._keyless.add(workspace_id)
                log.warning("journey has no key for workspace %s (TOUCHPOINT_SERVICE_KEYS): "
                            "its zone and revenue_properties are the defaults", workspace_id)
            body = {}
            self._cache[cache_key] = (time.monotonic() + self.settings.directory_ttl_s, body)
        except (Unknown, Problem):
            # Profile unreachable: defaults for now, and not asked again before the TTL (the
            # engine's batches ask too, and must not wait on a service that is down).
            body = {}
            self._cache[cache_key] = (time.monotonic() + self.settings.directory_ttl_s, body)
        if not isinstance(body, dict):
            return {}
        if body.get("workspace_id", workspace_id) != workspace_id:
            log.error("profile answered for another workspace than %s: the key journey "
                      "used is filed under the wrong workspace", workspace_id)
            return {}
        return body

    async def timezone(self, workspace_id: str, *, caller: str | None = None) -> str:
        """The workspace's zone (profile-settings `timezone`); UTC when absent or unknown."""
        body = await self._settings(workspace_id, caller)
        zone = body.get("timezone") or (body.get("conventions") or {}).get("timezone")
        return str(zone) if zone else "UTC"

    async def revenue_properties(self, workspace_id: str) -> tuple[str, ...] | None:
        """Profile's `revenue_properties` convention; None when unknown (the default)."""
        body = await self._settings(workspace_id, None)
        names = (body.get("conventions") or {}).get("revenue_properties")
        return tuple(str(n) for n in names) if isinstance(names, list) and names else None


async def zones(directory: Directory | None, workspaces: set[str]) -> dict[str, str]:
    """Each workspace's zone, the fallback for customers without one (cached)."""
    if directory is None or not directory.settings.profile_url:
        return {}
    return {ws: await directory.timezone(ws) for ws in workspaces}


def caller_key(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def revenue_names(directory: Directory | None, workspaces: set[str]
                        ) -> dict[str, tuple[str, ...]]:
    """Each workspace's `revenue_properties` where profile says (cached, same request as the
    zone); a workspace left out uses the default."""
    if directory is None or not directory.settings.profile_url:
        return {}
    found = {ws: await directory.revenue_properties(ws) for ws in workspaces}
    return {ws: names for ws, names in found.items() if names}
