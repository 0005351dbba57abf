"""Every route of every service says in OpenAPI what it answers, how it fails and how it
authenticates: typed 2xx bodies, problem+json errors (400 for validation, never FastAPI's
422 schema), a security scheme on every authenticated route, an example per request body."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from services.ingest.app import create_app as ingest_app
from services.journey.app import create_app as journey_app
from services.messaging.app import create_app as messaging_app
from services.profile.app import create_app as profile_app
from shared.contracts.storable import CONTROL, CONTROL_PATTERN
from shared.http.problems import PROBLEM
from shared.settings import Settings

APPS: dict[str, Callable[..., FastAPI]] = {"ingest": ingest_app, "profile": profile_app,
                                          "journey": journey_app, "messaging": messaging_app}
OPEN = {"/healthz", "/readyz", "/metrics"}  # no key: probes and Prometheus
TRACKING = {"/v1/track", "/v1/identify", "/v1/page", "/v1/screen", "/v1/group", "/v1/alias",
            "/v1/batch", "/v1/import"}
CALLBACKS = {"/v1/providers/twilio/status/{workspace_id}": "twilioSignature",
             "/v1/providers/smtp/status/{workspace_id}": "webhookSignature"}


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            yield path, method.upper(), operation


def _typed(schema: dict[str, Any]) -> bool:
    return "$ref" in schema or (schema.get("type") == "array" and "$ref" in schema["items"])


@pytest.fixture(scope="module", params=sorted(APPS))
def spec(request: pytest.FixtureRequest) -> dict[str, Any]:
    return APPS[request.param](Settings(env="test")).openapi()


def test_every_json_answer_is_a_model(spec: dict[str, Any]) -> None:
    untyped = []
    for path, method, operation in _operations(spec):
        for code, answer in operation["responses"].items():
            json_body = answer.get("content", {}).get("application/json")
            if code.startswith("2") and json_body is not None and not _typed(json_body["schema"]):
                untyped.append(f"{method} {path} {code}")
    assert untyped == []


def test_errors_are_problems_and_validation_is_400(spec: dict[str, Any]) -> None:
    wrong = []
    for path, method, operation in _operations(spec):
        responses = operation["responses"]
        if (operation.get("parameters") or "requestBody" in operation) and "400" not in responses:
            wrong.append(f"{method} {path}: no 400")
        for code, answer in responses.items():
            if code[0] in "45" and path not in OPEN and set(answer.get("content", {})) != {PROBLEM}:
                wrong.append(f"{method} {path} {code}: not problem+json")
            if code == "422" and "HTTPValidationError" in str(answer):
                wrong.append(f"{method} {path}: FastAPI's 422 validation error")
    assert wrong == []
    assert "HTTPValidationError" not in spec["components"].get("schemas", {})


def test_every_authenticated_route_declares_its_scheme(spec: dict[str, Any]) -> None:
    schemes = spec["components"].get("securitySchemes", {})
    if "adminKey" in schemes:
        assert schemes["adminKey"] == {"type": "http", "scheme": "bearer",
                                       "description": schemes["adminKey"]["description"]}
    wrong = []
    for path, method, operation in _operations(spec):
        if path in OPEN:
            continue
        wanted = ("writeKey" if path in TRACKING else CALLBACKS.get(path, "adminKey"))
        declared = [name for requirement in operation.get("security", []) for name in requirement]
        if declared != [wanted]:
            wrong.append(f"{method} {path}: {declared}, expected {wanted}")
        elif "401" not in operation["responses"]:
            wrong.append(f"{method} {path}: no 401")
        assert wanted in schemes
    assert wrong == []


def test_every_request_body_has_an_example(spec: dict[str, Any]) -> None:
    components = spec["components"]["schemas"]
    missing = []
    for path, method, operation in _operations(spec):
        for media_type, body in operation.get("requestBody", {}).get("content", {}).items():
            ref = body["schema"].get("$ref", "")
            model = components.get(ref.rsplit("/", 1)[-1], {}) if ref else body["schema"]
            if "example" not in body and "examples" not in body and "examples" not in model:
                missing.append(f"{method} {path} {media_type}")
    assert missing == []


def test_tracking_paths_declare_basic_auth_and_their_body() -> None:
    spec = ingest_app(Settings(env="test")).openapi()
    assert spec["components"]["securitySchemes"]["writeKey"]["scheme"] == "basic"
    track = spec["paths"]["/v1/track"]["post"]
    body = track["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/TrackCall"}
    # What each call type needs (ingest's `Call.problems`) is in its schema.
    needs = json.dumps(spec["components"]["schemas"]["TrackCall"]["allOf"])
    assert '"required": ["event"]' in needs and '"required": ["anonymousId"]' in needs
    assert track["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Accepted"}
    assert {"400", "401", "413", "503"} <= set(track["responses"])


def test_every_string_a_request_carries_says_no_control_character(
        spec: dict[str, Any]) -> None:
    """What the middleware refuses on every route is in the document: each request string
    (parameters, bodies, keys, free-form values) does `not` match the control characters."""
    assert all(bool(re.search(CONTROL_PATTERN, chr(c))) == bool(CONTROL.search(chr(c)))
               for c in range(0x80))
    schemas = spec["components"]["schemas"]
    silent: list[str] = []
    seen: set[str] = set()

    def walk(node: Any, where: str) -> None:
        if not isinstance(node, dict):
            return
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            if name not in seen:
                seen.add(name)
                walk(schemas[name], name)
            return
        for key in ("anyOf", "oneOf", "allOf"):
            for n, sub in enumerate(node.get(key, ())):
                walk(sub, f"{where}.{key}{n}")
        walk(node.get("items"), f"{where}[]")
        for name, sub in node.get("properties", {}).items():
            walk(sub, f"{where}.{name}")
        if node.get("type") == "string" and not {"format", "enum", "const"} & set(node) \
                and node.get("not") != {"pattern": CONTROL_PATTERN}:
            silent.append(where)
        if node.get("type") == "object" and node.get("additionalProperties") is not False:
            keys = node.get("propertyNames", {})
            if "enum" not in keys and keys.get("not") != {"pattern": CONTROL_PATTERN}:
                silent.append(f"{where} (keys)")
            walk(node.get("additionalProperties"), f"{where}.*")

    for path, method, operation in _operations(spec):
        for parameter in operation.get("parameters", ()):
            walk(parameter["schema"], f"{method} {path} {parameter['name']}")
        for media in operation.get("requestBody", {}).get("content", {}).values():
            walk(media["schema"], f"{method} {path} body")
    assert silent == []
    if "StorableJson" in seen:
        assert "not" in json.dumps(schemas["StorableJson"])
