"""What every route declares in OpenAPI beyond its handler: answers, errors, security.

Routes name their answer model and the problems only they give (`responses=answers(
SegmentOut, 404)`); `contract_openapi` adds what follows from the app itself: the 400
problem+json that validation really answers (FastAPI would say 422), 401 on authenticated
routes (429 once a source's failures are throttled), 413 on routes
with a body, 503 + Retry-After on every `/v1` route (database or
broker unreachable). Handlers keep returning what they return (their serialisation is
unchanged); the model documents its shape.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.storable import CONTROL_PATTERN
from shared.http.problems import PROBLEM

_PROBLEM_REF = {"$ref": "#/components/schemas/ProblemDetails"}
_WHEN = {
    400: "Invalid request: problem+json naming each field (`errors`).",
    401: "Missing, unknown or revoked key (with WWW-Authenticate).",
    403: "Not allowed for this key or workspace.",
    404: "No such resource in the key's workspace.",
    409: "Conflicts with the resource's current state.",
    413: "Body larger than the limit.",
    422: "Valid request the service cannot carry out (problem+json says why).",
    429: "Too many requests; retry after Retry-After.",
    503: "A dependency (database or broker) is unreachable; retry after Retry-After.",
}


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the field, `body` or `query`.")
    message: str


class ProblemDetails(BaseModel):
    """RFC 9457 problem document; some carry more members (`rejected`, ...)."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[FieldError] | None = None


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for the problem+json answers a route gives."""
    return {status: {"description": _WHEN[status], "content": {PROBLEM: {"schema": _PROBLEM_REF}}}
            for status in statuses}


def answers(model: type[BaseModel] | None, *statuses: int,
            status: int = 200) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route answering `model` (JSON) with `status`, and its problems."""
    ok: dict[int | str, dict[str, Any]] = {} if model is None else {status: {"model": model}}
    return {**ok, **problems(*statuses)}


_BODIES: dict[str, type[BaseModel]] = {}


def json_body(model: type[BaseModel], example: Any) -> dict[str, Any]:
    """`openapi_extra=` declaring a body the handler parses itself (to answer its own
    problem+json), as `model` with `example`."""
    _BODIES[model.__name__] = model
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}, "example": example}}}}


_SIGNATURES: dict[str, dict[str, Any]] = {}


def signed_by(scheme: str, header: str, description: str) -> dict[str, Any]:
    """`openapi_extra=` for a callback authenticated by a signature `header`."""
    _SIGNATURES[scheme] = {"type": "apiKey", "in": "header", "name": header,
                           "description": description}
    return {"security": [{scheme: []}]}


def form_body(model: type[BaseModel], example: dict[str, str]) -> dict[str, Any]:
    """`openapi_extra=` declaring a form body the handler reads itself."""
    _BODIES[model.__name__] = model
    return {"requestBody": {"required": True, "content": {
        "application/x-www-form-urlencoded": {
            "schema": {"$ref": f"#/components/schemas/{model.__name__}"}, "example": example}}}}


def _add_schema(schemas: dict[str, Any], model: type[BaseModel]) -> None:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        schemas.setdefault(name, definition)
    schemas[model.__name__] = schema


def contract_openapi(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document with the answers every route shares (cached)."""
    if app.openapi_schema:
        return app.openapi_schema
    spec = get_openapi(title=app.title, version=app.version, description=app.description,
                       routes=app.routes)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    _add_schema(schemas, ProblemDetails)
    text = json.dumps(spec)
    for name, model in _BODIES.items():
        if f'"#/components/schemas/{name}"' in text:
            _add_schema(schemas, model)
    for path, operations in spec.get("paths", {}).items():
        for operation in operations.values():
            _complete(path, operation)
    for scheme, definition in _SIGNATURES.items():
        if f'"{scheme}"' in text:
            spec["components"].setdefault("securitySchemes", {})[scheme] = definition
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    _declare_storable_text(spec)
    app.openapi_schema = spec
    return spec


def _complete(path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    extra: list[int] = []
    # FastAPI's own 422 (its validation errors) is answered 400 here; a route's declared
    # 422 (problem+json) stays.
    if "HTTPValidationError" in json.dumps(responses.get("422", {})):
        del responses["422"]
        extra.append(400)
    elif operation.get("parameters"):
        extra.append(400)
    if operation.get("security"):
        extra += [401, 429]  # 429: this source's failed authentications are throttled
    if "requestBody" in operation:
        extra += [400, 413]
    if path.startswith("/v1/"):
        extra.append(503)
    for status, entry in problems(*extra).items():
        responses.setdefault(str(status), entry)
    for code, entry in responses.items():
        # A handler annotated `-> dict[str, Any]` adds an untyped object next to the
        # declared model's $ref: the model is the contract.
        schema = entry.get("content", {}).get("application/json", {}).get("schema", {})
        if code.startswith("2") and "$ref" in schema and len(schema) > 1:
            entry["content"]["application/json"]["schema"] = {"$ref": schema["$ref"]}


# Any JSON whose strings and keys are storable (a free-form value: traits, properties,
# a preview's profile): what the middleware lets through.
_STORABLE = {"pattern": CONTROL_PATTERN}  # as `not`: no such character
_TEXT = {"type": "string", "not": _STORABLE}
STORABLE_JSON = "StorableJson"
_STORABLE_REF = f"#/components/schemas/{STORABLE_JSON}"
_STORABLE_JSON: dict[str, Any] = {
    "description": "Any JSON value; no string or key holds NUL or another C0 control "
                   "character (tab, newline and carriage return aside).",
    "anyOf": [_TEXT, {"type": "number"}, {"type": "boolean"}, {"type": "null"},
              {"type": "array", "items": {"$ref": _STORABLE_REF}},
              {"type": "object", "propertyNames": _TEXT,
               "additionalProperties": {"$ref": _STORABLE_REF}}]}
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "example",
                          "deprecated", "readOnly", "writeOnly"})


def _declare_storable_text(spec: dict[str, Any]) -> None:
    """Say of every string of every request (parameters and bodies, through the components
    they use) and of every object's keys that no control character is in them, and give
    every free-form value the `StorableJson` schema."""
    schemas = spec["components"]["schemas"]
    seen: set[str] = set()

    def visit(node: Any) -> None:
        if not isinstance(node, dict):
            return
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            if name not in seen and name in schemas:
                seen.add(name)
                visit(schemas[name])
            return
        if not set(node) - _ANNOTATIONS:  # `{}`: any value
            node["$ref"] = _STORABLE_REF
            return
        for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
            for sub in node.get(key, ()):
                visit(sub)
        visit(node.get("items"))
        types = node.get("type")
        types = types if isinstance(types, list) else [types]
        if "string" in types and not ({"format", "enum", "const"} & set(node)):
            if "not" not in node:
                node["not"] = dict(_STORABLE)
            elif node["not"] != _STORABLE:
                node.setdefault("allOf", []).append({"not": dict(_STORABLE)})
        for sub in node.get("properties", {}).values():
            visit(sub)
        if "object" in types:  # not a partial schema (`properties` inside an allOf)
            extra = node.get("additionalProperties", True)
            if extra is not False:
                node.setdefault("propertyNames", dict(_TEXT))
                if extra is True or extra == {}:
                    node["additionalProperties"] = {"$ref": _STORABLE_REF}
                else:
                    visit(extra)

    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", ()):
                visit(parameter.get("schema"))
            for media in operation.get("requestBody", {}).get("content", {}).values():
                visit(media.get("schema"))
    if f'"{_STORABLE_REF}"' in json.dumps(spec):
        schemas[STORABLE_JSON] = _STORABLE_JSON
