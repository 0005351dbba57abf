"""Two workspaces, both key kinds: every management route of every service refuses no key,
a write key and a forged key (401), and nothing workspace A holds is ever read, changed or
deleted with workspace B's admin key."""

from __future__ import annotations

import uuid
from base64 import b64encode
from dataclasses import dataclass
from typing import Any

import pytest

from tests.integration.profile_support import eventually
from tests.security.support import Stack, Tenant

pytestmark = pytest.mark.integration
# Routes anyone may call: health and metrics, and provider webhooks (signed per channel).
PUBLIC_PREFIXES = ("/healthz", "/readyz", "/metrics", "/v1/providers/")
INGEST_TRACKING = ("/v1/track", "/v1/identify", "/v1/page", "/v1/screen", "/v1/group",
                   "/v1/alias", "/v1/batch", "/v1/import")


def _operations(stack: Stack) -> list[tuple[str, str, str]]:
    """(service, method, path template) of every documented management route."""
    out = []
    for service, app in stack.apps.items():
        for path, operations in app.openapi()["paths"].items():
            if path.startswith(PUBLIC_PREFIXES) or path in INGEST_TRACKING:
                continue
            out += [(service, method.upper(), path) for method in operations]
    return out


def _fill(template: str, values: dict[str, str]) -> str:
    out, rest = "", template
    while "{" in rest:
        before, _, after = rest.partition("{")
        name, _, rest = after.partition("}")
        out += before + values.get(name, "x")
    return out + rest


def _basic(key: str) -> str:
    return "Basic " + b64encode(f"{key}:".encode()).decode()


async def test_management_routes_refuse_missing_write_and_forged_keys(stack: Stack) -> None:
    wrong_keys: list[dict[str, str]] = [
        {},
        {"Authorization": f"Bearer {stack.a.write_key}"},
        {"Authorization": _basic(stack.a.admin_key)},
        {"Authorization": _basic(stack.a.write_key)},
        {"Authorization": f"Bearer {stack.a.admin_key}x"},
        {"Authorization": "Bearer tp_admin_forged"},
    ]
    checked, wrong = 0, []
    for service, method, template in _operations(stack):
        path = _fill(template, {})
        for headers in wrong_keys:
            r = await stack.http.request(method, stack.url(service, path), headers=headers,
                                         json={} if method in ("POST", "PUT") else None)
            checked += 1
            if r.status_code not in (401, 403):
                wrong.append(f"{service} {method} {path} with {list(headers.values())[:1]} -> "
                             f"{r.status_code}")
    assert checked > 200
    assert not wrong, "\n".join(wrong)


@dataclass
class Holdings:
    """What workspace A owns, and the markers that would betray it in a response."""

    profile_id: str
    segment: str
    journey: str
    template: str
    markers: list[str]


async def _holdings(stack: Stack, a: Tenant) -> Holdings:
    run = uuid.uuid4().hex[:8]
    user = f"user-a-{run}"
    marker = f"secret-of-a-{run}"
    r = await stack.http.post(stack.url("ingest", "/v1/identify"), auth=a.write, json={
        "userId": user, "traits": {"email": a.email, "phone": a.phone, "plan": marker}})
    assert r.status_code == 200, r.text

    async def found() -> dict[str, Any] | None:
        r = await stack.http.get(stack.url("profile", "/v1/profiles/lookup"),
                                 params={"user_id": user}, headers=a.admin)
        return r.json() if r.status_code == 200 else None

    profile = await eventually(found)
    segment, journey, template = f"seg-a-{run}", f"jour-a-{run}", f"tmpl-a-{run}"
    r = await stack.http.put(stack.url("profile", f"/v1/segments/{segment}"), headers=a.admin,
                             json={"name": marker, "rule": {"field": "profile.traits.plan",
                                                            "op": "eq", "value": marker}})
    assert r.status_code == 200, r.text
    r = await stack.http.post(stack.url("journey", "/v1/journeys"), headers=a.admin, json={
        "key": journey, "name": marker,
        "stages": [{"key": "s", "enter": {"event": "Viewed"},
                    "steps": [{"id": "w", "wait": "P1D"}]}]})
    assert r.status_code == 201, r.text
    r = await stack.http.put(stack.url("messaging", f"/v1/templates/{template}"),
                             headers=a.admin, json={"channel": "sms", "text": marker})
    assert r.status_code == 200, r.text
    # Not the profile id: B sends it in the path, and a 404 or an empty list may echo it.
    return Holdings(profile["id"], segment, journey, template, [marker, a.email, a.phone])


async def test_workspace_b_never_reads_or_changes_what_a_holds(stack: Stack) -> None:
    a, b = stack.a, stack.b
    held = await _holdings(stack, a)
    values = {"profile_id": held.profile_id, "message_id": held.profile_id,
              "workspace_id": a.workspace}
    by_service = {"profile": {"key": held.segment}, "journey": {"key": held.journey},
                  "messaging": {"key": held.template}, "ingest": {}}
    leaks, checked = [], 0
    for service, method, template in _operations(stack):
        path = _fill(template, {**values, **by_service[service]})
        params = {"q": a.email, "email": a.email, "phone": a.phone}
        body = {} if method in ("POST", "PUT") else None
        r = await stack.http.request(method, stack.url(service, path), headers=b.admin,
                                     params=params, json=body)
        checked += 1
        if any(m in r.text for m in held.markers):
            leaks.append(f"{service} {method} {path} -> {r.status_code}")
    assert checked > 40
    assert not leaks, "\n".join(leaks)
    # After everything B tried (DELETEs included), A still holds all of it.
    for service, path in (("profile", f"/v1/profiles/{held.profile_id}"),
                          ("profile", f"/v1/segments/{held.segment}"),
                          ("journey", f"/v1/journeys/{held.journey}"),
                          ("messaging", f"/v1/templates/{held.template}")):
        r = await stack.http.get(stack.url(service, path), headers=a.admin)
        assert r.status_code == 200, (path, r.text)
        assert held.markers[0] in r.text or a.email in r.text
