"""Issue 13.2 and 13.3: NUL and control characters, and deep nesting, are a 400 problem+json
wherever they arrive (ingest calls and batch items, and the path, query or body of every
route of every service); the database's own refusals are a 400 too, and never logged with
their values."""

from __future__ import annotations

import logging
import uuid
from base64 import b64encode
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from shared.db import create_engine
from shared.http.problems import install_problem_handlers, is_data_error
from shared.logging import JsonFormatter
from shared.testing.topics import read_topic
from tests.security.support import Stack

pytestmark = pytest.mark.integration
PROBLEM = "application/problem+json"


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def _call(**fields: Any) -> dict[str, Any]:
    return {"userId": "u-bad", "event": "Viewed", **fields}


# (path, body, field named in the error)
UNSTORABLE: list[tuple[str, dict[str, Any], str]] = [
    ("track", _call(event="Vi\u0000ewed"), "event"),
    ("track", _call(userId="u\u0000"), "userId"),
    ("track", _call(userId=None, anonymousId="a\u0000"), "anonymousId"),
    ("track", _call(messageId="m\u0000"), "messageId"),
    ("track", _call(properties={"k\u0000": 1}), "properties"),
    ("track", _call(properties={"k": "v\u0000"}), "properties.k"),
    ("track", _call(properties={"list": ["ok", "n\u0000"]}), "properties.list.1"),
    ("track", _call(context={"page": {"url": "x\u0000"}}), "context.page.url"),
    ("track", _call(integrations={"All": "\u0000"}), "integrations.All"),
    ("track", _call(event="bell\u0007"), "event"),
    ("track", _call(properties={"esc": "\u001b[31m"}), "properties.esc"),
    ("page", {"userId": "u-bad", "name": "Ho\u0000me"}, "name"),
    ("identify", {"userId": "u-bad", "traits": {"name": "A\u0000"}}, "traits.name"),
    ("identify", {"userId": "u-bad", "traits": {"n\u0000": "A"}}, "traits"),
    ("identify", {"userId": "u-bad", "traits": nested(200)}, "traits"),
    ("identify", {"userId": "u-bad", "traits": nested(33)}, "traits"),
    ("group", {"userId": "u-bad", "groupId": "g\u0000"}, "groupId"),
    ("alias", {"userId": "u-bad", "previousId": "p\u0000"}, "previousId"),
]


@pytest.mark.parametrize(("path", "body", "field"), UNSTORABLE)
async def test_ingest_rejects_what_the_pipeline_cannot_store(stack: Stack, path: str,
                                                             body: dict[str, Any],
                                                             field: str) -> None:
    r = await stack.http.post(stack.url("ingest", f"/v1/{path}"), json=body, auth=stack.a.write)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == PROBLEM
    named = [e["field"] for e in r.json()["errors"]]
    assert any(n == field or n.startswith(field + ".") for n in named), named


async def test_ingest_accepts_tab_newline_cr_and_32_levels(stack: Stack) -> None:
    for body in (_call(properties={"text": "a\tb\nc\r\n"}),
                 {"userId": "u-ok", "traits": nested(32)}):
        path = "track" if "event" in body else "identify"
        r = await stack.http.post(stack.url("ingest", f"/v1/{path}"), json=body,
                                  auth=stack.a.write)
        assert r.status_code == 200, r.text


async def test_batch_rejects_each_bad_item_and_accepts_the_rest(stack: Stack) -> None:
    good = f"batch-ok-{uuid.uuid4().hex}"
    batch = [{"type": "track", **_call(messageId=good)},
             {"type": "track", **_call(properties={"x": "\u0000"})},
             {"type": "identify", "userId": "u-bad", "traits": nested(200)},
             {"type": "track", **_call(event="\u0001")}]
    r = await stack.http.post(stack.url("ingest", "/v1/batch"), json={"batch": batch},
                              auth=stack.a.write)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["accepted"] == 1
    assert [(x["index"], x["status"]) for x in answer["rejected"]] == [(1, 400), (2, 400),
                                                                       (3, 400)]
    records = await read_topic(stack.settings.kafka_bootstrap, stack.settings.topic("events"),
                               lambda rs: any(orjson.loads(x.value)["id"] == good for x in rs))
    assert not any(b"\\u0000" in x.value for x in records)


# Routes left out of the OpenAPI documents (tracking pixels, links, unsubscribe pages).
HIDDEN = [("messaging", "GET", "/t/o/{token}.gif"), ("messaging", "GET", "/t/c/{token}"),
          ("messaging", "GET", "/u/{token}"), ("messaging", "POST", "/u/{token}")]


def _routes(stack: Stack) -> list[tuple[str, str, str]]:
    """(service, method, path template) of every route the services serve."""
    out = list(HIDDEN)
    for service, app in stack.apps.items():
        for path, operations in app.openapi()["paths"].items():
            out += [(service, method.upper(), path) for method in operations]
    return out


def _fill(path: str, value: str) -> str:
    out, rest = "", path
    while "{" in rest:
        before, _, after = rest.partition("{")
        name, _, rest = after.partition("}")
        out += before + value
    return out + rest


async def test_nul_in_path_query_or_body_of_every_route_is_a_400(stack: Stack) -> None:
    checked, wrong = 0, []
    for service, method, template in _routes(stack):
        attempts: list[tuple[str, dict[str, Any]]] = []
        if "{" in template:
            attempts.append((_fill(template, "a%00b"), {}))
        attempts.append((_fill(template, "x"), {"params": {"q": "a\u0000b"}}))
        attempts.append((_fill(template, "x"), {"params": {"q": "a\u0001b"}}))
        if method in ("POST", "PUT", "PATCH"):
            attempts.append((_fill(template, "x"), {"content": b'{"name": "a\\u0000b"}',
                                                    "headers": {"content-type":
                                                                "application/json"}}))
            attempts.append((_fill(template, "x"), {"data": {"MessageStatus": "a\u0000"}}))
            attempts.append((_fill(template, "x"), {"content": b'{"name": "\\b"}'}))
        tracking = service == "ingest" and not template.startswith("/v1/keys")
        auth = {"Authorization": "Basic " + b64encode(f"{stack.a.write_key}:".encode())
                .decode()} if tracking else stack.a.admin
        for path, kwargs in attempts:
            headers = {**auth, **kwargs.pop("headers", {})}
            r = await stack.http.request(method, stack.url(service, path), headers=headers,
                                         **kwargs)
            checked += 1
            if r.status_code != 400 or r.headers.get("content-type") != PROBLEM:
                wrong.append(f"{service} {method} {path} {kwargs} -> {r.status_code}")
    assert checked > 100
    assert not wrong, "\n".join(wrong)


async def test_unauthenticated_status_webhooks_refuse_nul(stack: Stack) -> None:
    for provider in ("twilio", "smtp"):
        for path in (f"/v1/providers/{provider}/status/{stack.a.workspace}%00",
                     f"/v1/providers/{provider}/status/{stack.a.workspace}?x=%00"):
            r = await stack.http.post(stack.url("messaging", path), content=b"")
            assert r.status_code == 400, (path, r.text)
    r = await stack.http.post(
        stack.url("messaging", f"/v1/providers/twilio/status/{stack.a.workspace}"),
        content=b"MessageSid=SM1%00&MessageStatus=delivered",
        headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400, r.text
    r = await stack.http.post(
        stack.url("messaging", f"/v1/providers/smtp/status/{stack.a.workspace}"),
        content=b'{"message_id": "\\u0000", "status": "bounced"}',
        headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text


async def test_tab_and_newline_in_a_query_are_ordinary_text(stack: Stack) -> None:
    r = await stack.http.get(stack.url("profile", "/v1/profiles"), headers=stack.a.admin,
                             params={"q": "a\tb"})
    assert r.status_code == 200, r.text


async def test_a_database_refusal_is_a_data_error_and_hides_its_parameters(
        stack: Stack) -> None:
    """Behind the middleware, what Postgres refuses as data is the client's 400, and the
    error text (which a traceback would carry) holds no parameter."""
    engine = create_engine(stack.settings.database_url)
    try:
        async with engine.connect() as conn:
            with pytest.raises(Exception) as caught:
                await conn.execute(text("SELECT CAST(:a AS text), CAST(:b AS text)"),
                                   {"a": stack.a.email, "b": "nul\u0000byte"})
    finally:
        await engine.dispose()
    assert is_data_error(caught.value)
    assert stack.a.email not in str(caught.value)


async def test_an_unexpected_error_is_logged_without_values(
        caplog: pytest.LogCaptureFixture) -> None:
    """A 500 logs the exception type, method, route template and frames: not the raw path
    nor the exception's message (both may carry an email)."""
    email = f"leak.{uuid.uuid4().hex[:8]}@example.com"
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/v1/things/{thing_id}")
    async def boom(thing_id: str) -> None:
        raise RuntimeError(f"could not store {thing_id}")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    with caplog.at_level(logging.INFO):
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            r = await http.get(f"/v1/things/{email}")
    assert r.status_code == 500
    assert r.headers["content-type"] == PROBLEM and email not in r.text
    served = [rec for rec in caplog.records if not rec.name.startswith(("httpx", "httpcore"))]
    lines = [JsonFormatter("t").format(rec) for rec in served]
    assert any("RuntimeError" in line and "/v1/things/{thing_id}" in line for line in lines)
    assert not any(email in line or email in rec.getMessage()
                   for line, rec in zip(lines, served, strict=True))


async def test_a_value_the_database_refuses_is_a_400_not_a_crash(stack: Stack) -> None:
    """The cause behind the middleware: whatever route stores a value Postgres refuses
    answers 400 problem+json, and the error is handled (not re-raised to the server)."""
    engine = create_engine(stack.settings.database_url)
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/v1/notes")
    async def store(body: dict[str, Any]) -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT CAST(:v AS text)"), {"v": body["v"]})

    try:
        transport = httpx.ASGITransport(app=app)  # raises what the app re-raises
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            r = await http.post("/v1/notes", json={"v": f"{stack.a.email}\u0000"})
    finally:
        await engine.dispose()
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == PROBLEM and stack.a.email not in r.text
