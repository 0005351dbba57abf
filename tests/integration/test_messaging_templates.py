"""Templates as marketers write them and discount codes, against the real things: the
Tansu broker, Postgres and the SMTP sink. Two messaging apps (two replicas with their own
topics, one database) hand out codes concurrently."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from sqlalchemy import select

from services.messaging.app import create_app
from services.messaging.tables import codes, messages
from shared.contracts.envelope import message_key
from shared.contracts.send import Channel, Recipient, SendCommand
from shared.db import create_engine
from shared.kafka import create_producer, publish
from shared.kafka.admin import ensure_topics
from shared.settings import Settings
from tests.support.net import free_port
from tests.support.servers import serve_app
from tests.support.smtp import Inbox
from tests.support.topics import read_topic

pytestmark = pytest.mark.integration
LOOP = {"loop_scope": "session"}


class Replica:
    def __init__(self, settings: Settings, url: str, producer: AIOKafkaProducer) -> None:
        self.settings, self.url, self.producer = settings, url, producer

    async def send(self, *cmds: SendCommand) -> None:
        await publish(self.producer, self.settings.topic("send-commands"),
                      [(message_key(c.workspace_id, c.profile_id), c) for c in cmds],
                      topic_short="send-commands")


@pytest_asyncio.fixture(scope="module", **LOOP)
async def replicas(settings: Settings, admin_headers: dict[str, str]
                   ) -> AsyncIterator[tuple[Replica, Replica, httpx.AsyncClient]]:
    started: list[Replica] = []
    async with httpx.AsyncClient(headers=admin_headers, timeout=10) as http:
        contexts = []
        for _ in range(2):
            port = free_port()
            own = settings.model_copy(update={"topic_prefix": f"tpl-{uuid.uuid4().hex[:8]}."})
            await ensure_topics(own)
            app = create_app(own)
            app.state.messaging.settings.messaging_public_url = f"http://127.0.0.1:{port}"
            producer = create_producer(own, client_id="test-templates")
            await producer.start()
            ctx = serve_app(app, port)
            url = await ctx.__aenter__()
            contexts.append((ctx, producer))
            for _ in range(200):
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            started.append(Replica(own, url, producer))
        yield started[0], started[1], http
        for ctx, producer in contexts:
            await ctx.__aexit__(None, None, None)
            await producer.stop()


def command(template: str, profile: str, *, context: dict[str, Any] | None = None
            ) -> SendCommand:
    key = f"test-{uuid.uuid4().hex}"
    return SendCommand(id=key, workspace_id="default", profile_id=profile, idempotency_key=key,
                       channel=Channel.email, template=template,
                       to=Recipient(email=f"{profile[:8]}@example.com"),
                       context=context or {"profile": {"traits": {"first_name": "Ada"}}},
                       requested_at=datetime.now(UTC))


async def _rows(settings: Settings, keys: list[str], *, timeout: float = 60
                ) -> list[dict[str, Any]]:
    engine = create_engine(settings.database_url)
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        while True:
            async with engine.connect() as conn:
                rows = [dict(r) for r in (await conn.execute(select(messages).where(
                    messages.c.idempotency_key.in_(keys)))).mappings()]
            if len(rows) == len(keys) and all(r["status"] in ("sent", "failed") for r in rows):
                return rows
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError([r["status"] for r in rows])
            await asyncio.sleep(0.1)
    finally:
        await engine.dispose()


async def _events(r: Replica, message_ids: set[str], status: str) -> dict[str, dict[str, Any]]:
    def done(records: list[Any]) -> bool:
        got = {v["message_id"] for v in map(_value, records) if v["status"] == status}
        return message_ids <= got
    records = await read_topic(r.settings.kafka_bootstrap, r.settings.topic("delivery-events"),
                               done)
    return {v["message_id"]: v for v in map(_value, records)
            if v["status"] == status and v["message_id"] in message_ids}


def _value(record: Any) -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads(record.value)
    return value


async def test_versions_snippets_and_refusals_at_save(
        replicas: tuple[Replica, Replica, httpx.AsyncClient], unique: str) -> None:
    a, _, http = replicas
    url = f"{a.url}/v1/templates/v-{unique}"
    r = await http.put(url, json={"channel": "email", "subject": "x",
                                  "html": "<p>ok</p>\n<p>{{ name | shout }}</p>"})
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"][0] == {"field": "html", "message": "unknown filter 'shout'",
                                     "line": 2, "column": 13}
    r = await http.put(url, json={"channel": "email", "subject": "x",
                                  "text": f"{{% render 'foot-{unique}' %}}"})
    assert r.status_code == 400 and "does not exist" in r.json()["errors"][0]["message"]
    r = await http.put(f"{a.url}/v1/snippets/foot-{unique}", json={"source": "{% if %}"})
    assert r.status_code == 400 and r.json()["errors"][0]["line"] == 1
    r = await http.put(f"{a.url}/v1/snippets/foot-{unique}",
                       json={"source": f"x{{% render 'foot-{unique}' %}}"})
    assert r.status_code == 400 and "nested too deep" in r.json()["detail"]
    r = await http.put(f"{a.url}/v1/snippets/foot-{unique}",
                       json={"source": "-- {{ profile.traits.first_name | default: 'you' }}"})
    assert r.status_code == 200
    assert (await http.get(f"{a.url}/v1/snippets/foot-{unique}")).json()["source"].startswith("--")
    attack = "{{ 'aaaaaaaaa' " + "| replace: 'a', 'aaaaa' " * 10 + "}}"
    r = await http.put(url, json={"channel": "email", "subject": "x", "text": attack})
    assert r.status_code == 400 and "template limit" in r.json()["detail"]

    for n in range(2):
        r = await http.put(url, json={"channel": "email", "subject": f"v{n}",
                                      "text": f"Hi{{% render 'foot-{unique}' %}}"})
        assert r.status_code == 200 and r.json()["version"] == n + 1
        assert r.json()["strict"] is False
    r = await http.put(url, json={"channel": "email", "subject": "v3", "text": "x",
                                  "strict": True})
    r = await http.put(url, json={"channel": "email", "subject": "v4", "text": "x"})
    assert r.json()["version"] == 4 and r.json()["strict"] is True  # kept from the last save
    versions = (await http.get(f"{url}/versions")).json()["items"]
    assert [v["version"] for v in versions] == [4, 3, 2, 1]
    assert [v["subject"] for v in versions] == ["v4", "v3", "v1", "v0"]
    r = await http.post(f"{url}/preview", json={})
    assert r.status_code == 200 and r.json()["undefined"] == []
    assert (await http.get(f"{a.url}/v1/templates/nope-{unique}/versions")).status_code == 404
    assert (await http.delete(f"{a.url}/v1/snippets/foot-{unique}")).status_code == 204
    assert (await http.get(f"{a.url}/v1/snippets/foot-{unique}")).status_code == 404


async def test_code_pools_upload_generate_and_report(
        replicas: tuple[Replica, Replica, httpx.AsyncClient], unique: str) -> None:
    a, _, http = replicas
    url = f"{a.url}/v1/code-pools/p-{unique}"
    assert (await http.get(url)).status_code == 404
    r = await http.put(url, json={"codes": ["A1", "B2", "A1", "C3", " B2 "]})
    assert r.status_code == 200, r.text
    assert r.json() == {"key": f"p-{unique}", "total": 3, "remaining": 3, "added": 3,
                        "duplicates": ["A1", "B2"]}
    r = await http.put(url, json={"codes": ["C3", "D4"]})
    assert r.json()["added"] == 1 and r.json()["duplicates"] == ["C3"]
    r = await http.put(url, json={"generate": {"count": 50, "prefix": "THX-"}})
    assert r.json()["added"] == 50 and r.json()["total"] == 54
    assert (await http.get(url)).json() == {"key": f"p-{unique}", "total": 54, "remaining": 54}
    r = await http.put(url, json={"codes": ["x"], "generate": {"count": 1}})
    assert r.status_code == 400
    r = await http.put(url, json={"generate": {"count": 0}})
    assert r.status_code == 400 and r.json()["errors"][0]["field"].endswith("count")


async def _pool_and_template(http: httpx.AsyncClient, url: str, pool: str, code: str,
                             template: str, subject: str, text: str) -> None:
    """Code pool `pool` holding `code`, and the email template `template`."""
    await http.put(f"{url}/v1/code-pools/{pool}", json={"codes": [code]})
    r = await http.put(f"{url}/v1/templates/{template}", json={
        "channel": "email", "subject": subject, "text": text})
    assert r.status_code == 200, r.text


async def test_codes_one_per_customer_reused_and_never_consumed_by_preview(
        replicas: tuple[Replica, Replica, httpx.AsyncClient], unique: str) -> None:
    a, _, http = replicas
    pool = f"thx-{unique}"
    await _pool_and_template(http, a.url, pool, "ONLY-ONE", f"c-{unique}", "Thanks",
                             f"Your code: {{{{ '{pool}' | code }}}} "
                             f"(again: {{{{ '{pool}' | code }}}})")
    r = await http.post(f"{a.url}/v1/templates/c-{unique}/preview", json={})
    assert f"[{pool} code]" in r.json()["text"]
    assert (await http.get(f"{a.url}/v1/code-pools/{pool}")).json()["remaining"] == 1

    ada, bob = str(uuid.uuid4()), str(uuid.uuid4())
    first, again, other = (command(f"c-{unique}", ada), command(f"c-{unique}", ada),
                           command(f"c-{unique}", bob))
    await a.send(first)
    await _rows(a.settings, [first.idempotency_key])
    await a.send(again, other)
    rows = {r["idempotency_key"]: r for r in await _rows(
        a.settings, [first.idempotency_key, again.idempotency_key, other.idempotency_key])}
    assert rows[first.idempotency_key]["status"] == "sent"
    assert rows[again.idempotency_key]["status"] == "sent"  # the same customer: the same code
    assert "ONLY-ONE (again: ONLY-ONE)" in rows[again.idempotency_key]["body"]
    assert rows[other.idempotency_key]["status"] == "failed"
    assert rows[other.idempotency_key]["error"] == f"code pool {pool} empty"
    assert rows[first.idempotency_key]["template_version"] == 1
    sent = await _events(a, {rows[first.idempotency_key]["id"]}, "sent")
    event = sent[rows[first.idempotency_key]["id"]]
    assert event["codes"] == {pool: "ONLY-ONE"} and event["template_version"] == 1
    assert (await http.get(f"{a.url}/v1/code-pools/{pool}")).json()["remaining"] == 0


async def test_inline_preview_renders_unsaved_sources_like_a_saved_one(
        replicas: tuple[Replica, Replica, httpx.AsyncClient], unique: str) -> None:
    """`POST /v1/templates/preview` renders the sources in the request: the same answer as
    the saved template's preview, nothing saved, no code handed out, problems at their
    field."""
    a, _, http = replicas
    pool = f"inl-{unique}"
    await http.put(f"{a.url}/v1/code-pools/{pool}", json={"codes": ["KEEP"]})
    source = {"channel": "email", "subject": "Hi {{ profile.traits.name }}",
              "html": f"<p>{{{{ event.total | money }}}} {{{{ '{pool}' | code }}}}</p>"
                      "{{ profile.traits.nope }}"}
    context = {"profile": {"traits": {"name": "Ada"}, "currency": "EUR"},
               "event": {"total": 5}}
    r = await http.post(f"{a.url}/v1/templates/preview", json={"template": source, **context})
    assert r.status_code == 200, r.text
    inline = r.json()
    assert inline["subject"] == "Hi Ada" and f"[{pool} code]" in inline["html"]
    assert "5" in inline["text"] and "/u/preview" in inline["text"]  # text from html + footer
    assert [u["name"] for u in inline["undefined"]] == ["profile.traits.nope"]
    listing = (await http.get(f"{a.url}/v1/templates")).json()["items"]
    assert not [t for t in listing if pool in (t["html"] or "")]  # nothing saved
    assert (await http.get(f"{a.url}/v1/code-pools/{pool}")).json()["remaining"] == 1
    r = await http.put(f"{a.url}/v1/templates/inl-{unique}", json=source)
    assert r.status_code == 200
    saved = await http.post(f"{a.url}/v1/templates/inl-{unique}/preview", json=context)
    assert saved.json() == inline

    r = await http.post(f"{a.url}/v1/templates/preview",
                        json={"template": source | {"strict": True}, **context})
    assert r.status_code == 422 and "nope" in r.json()["detail"]
    r = await http.post(f"{a.url}/v1/templates/preview",
                        json={"template": {"channel": "email", "subject": "x",
                                           "html": "{% if %}"}})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "template.html"
    assert r.json()["errors"][0]["line"] == 1
    r = await http.post(f"{a.url}/v1/templates/preview",
                        json={"template": {"channel": "sms"}})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "template.text"
    attack = "{{ 'aaaaaaaaa' " + "| replace: 'a', 'aaaaa' " * 10 + "}}"
    r = await http.post(f"{a.url}/v1/templates/preview",
                        json={"template": {"channel": "sms", "text": attack}})
    assert r.status_code == 400 and "template limit" in r.json()["detail"]
    r = await http.post(f"{a.url}/v1/templates/preview", json={"profile": {}})
    assert r.status_code in (400, 422) and "template" in r.text
    r = await http.post(f"{a.url}/v1/templates/preview", json={"template": source},
                        headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


async def test_codes_are_never_given_twice_by_two_replicas(
        replicas: tuple[Replica, Replica, httpx.AsyncClient], unique: str) -> None:
    a, b, http = replicas
    pool = f"race-{unique}"
    customers = [str(uuid.uuid4()) for _ in range(40)]
    r = await http.put(f"{a.url}/v1/code-pools/{pool}",
                       json={"generate": {"count": 30, "prefix": "R-"}})
    assert r.json()["remaining"] == 30
    r = await http.put(f"{a.url}/v1/templates/race-{unique}", json={
        "channel": "email", "subject": "x", "text": f"{{{{ '{pool}' | code }}}}"})
    assert r.status_code == 200
    # every customer gets a command on each replica, at the same time: 80 sends, 40
    # customers, 30 codes
    cmds_a = [command(f"race-{unique}", c) for c in customers]
    cmds_b = [command(f"race-{unique}", c) for c in customers]
    await asyncio.gather(a.send(*cmds_a), b.send(*cmds_b))
    rows = await _rows(a.settings, [c.idempotency_key for c in cmds_a + cmds_b], timeout=120)
    engine = create_engine(a.settings.database_url)
    try:
        async with engine.connect() as conn:
            given = (await conn.execute(select(codes.c.code, codes.c.profile_id).where(
                codes.c.workspace_id == "default", codes.c.pool == pool,
                codes.c.profile_id.is_not(None)))).all()
    finally:
        await engine.dispose()
    holders = {p: c for c, p in given}
    assert len(given) == 30 and len(holders) == 30  # every code to one customer, 1 each
    for row in rows:  # a customer's sends on both replicas carry their one code
        if row["status"] == "sent":
            assert row["body"].startswith(holders[row["profile_id"]])
        else:  # or failed when the pool was empty for them
            assert row["error"] == f"code pool {pool} empty"
    served = {r["profile_id"] for r in rows if r["status"] == "sent"}
    assert served == set(holders)
    assert all(r["status"] == "failed" for r in rows if r["profile_id"] not in holders)
    assert (await http.get(f"{b.url}/v1/code-pools/{pool}")).json()["remaining"] == 0


async def test_test_send_goes_through_the_provider_marked_test(
        replicas: tuple[Replica, Replica, httpx.AsyncClient], unique: str,
        smtp: tuple[str, Inbox]) -> None:
    a, _, http = replicas
    pool = f"ts-{unique}"
    await _pool_and_template(http, a.url, pool, "NOT-FOR-TESTS", f"ts-{unique}",
                             "Hi {{ profile.traits.first_name }}",
                             f"Code {{{{ '{pool}' | code }}}}, {{{{ event.total | money }}}}")
    url = f"{a.url}/v1/templates/ts-{unique}/test-send"
    r = await http.post(url, json={"to": f"tester-{unique}@example.com",
                                   "profile": {"traits": {"first_name": "Tess"}},
                                   "event": {"total": 12}})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["status"] == "sent" and out["template_version"] == 1
    for _ in range(200):
        found = [m for m in smtp[1].messages if m["X-Touchpoint-Message"] == out["message_id"]]
        if found:
            break
        await asyncio.sleep(0.05)
    assert found and found[0]["Subject"] == "Hi Tess"
    assert f"Code [{pool} code], $12.00" in found[0].get_body(("plain",)).get_content()
    events = await _events(a, {out["message_id"]}, "sent")
    assert events[out["message_id"]]["test"] is True
    logged = (await http.get(f"{a.url}/v1/messages/{out['message_id']}")).json()
    assert logged["status"] == "sent" and logged["template_version"] == 1
    assert (await http.get(f"{a.url}/v1/code-pools/{pool}")).json()["remaining"] == 1
    r = await http.post(url, json={"to": "not-an-address"})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "to"
    r = await http.post(f"{a.url}/v1/templates/none-{unique}/test-send", json={"to": "a@b.io"})
    assert r.status_code == 404


async def test_cli_preview_and_test_send(
        replicas: tuple[Replica, Replica, httpx.AsyncClient], unique: str) -> None:
    from typer.testing import CliRunner

    from touchpoint.cli import app

    a, _, http = replicas
    await http.put(f"{a.url}/v1/templates/cli-{unique}", json={
        "channel": "email", "subject": "Hi {{ profile.traits.first_name }}",
        "text": "Total {{ event.total | money: 'EUR' }}{{ profile.traits.nick }}"})
    key = http.headers["authorization"].removeprefix("Bearer ")
    common = ["--url", a.url, "--admin-key", key]
    runner = CliRunner()
    result = await asyncio.to_thread(runner.invoke, app, [
        "templates", "preview", f"cli-{unique}", "--event", '{"total": 5}',
        "--profile", '{"traits": {"first_name": "Al"}}', *common])
    assert result.exit_code == 0, result.output
    assert "Hi Al" in result.output and "Total €5.00" in result.output
    assert "undefined profile.traits.nick (text, line 1, column" in result.output
    result = await asyncio.to_thread(runner.invoke, app, [
        "templates", "test-send", f"cli-{unique}", "--to", f"cli-{unique}@example.com",
        "--profile", '{"traits": {"first_name": "Cy"}}', *common])
    assert result.exit_code == 0 and result.output.startswith("sent: message "), result.output
    result = await asyncio.to_thread(runner.invoke, app, [
        "templates", "preview", f"missing-{unique}", *common])
    assert result.exit_code == 1 and "404" in result.output


async def test_html_only_email_gets_a_text_part_and_only_anchor_links_are_tracked(
        replicas: tuple[Replica, Replica, httpx.AsyncClient], unique: str,
        smtp: tuple[str, Inbox]) -> None:
    a, _, http = replicas
    r = await http.put(f"{a.url}/v1/templates/h-{unique}", json={
        "channel": "email", "subject": "Sale",
        "html": '<html><head><link rel="stylesheet" href="https://cdn.example/s.css"></head>'
                '<body><p>Hi {{ profile.traits.first_name }},</p>'
                '<p>See <a href="https://shop.example/sale">the sale</a>.</p></body></html>'})
    assert r.status_code == 200
    r = await http.post(f"{a.url}/v1/templates/h-{unique}/test-send",
                        json={"to": f"Zoë <h-{unique}@example.com>"})
    assert r.status_code == 200 and r.json()["status"] == "sent", r.text
    message_id = r.json()["message_id"]
    for _ in range(200):
        found = [m for m in smtp[1].messages if m["X-Touchpoint-Message"] == message_id]
        if found:
            break
        await asyncio.sleep(0.05)
    mail = found[0]
    assert mail["To"].addresses[0].display_name == "Zoë"
    text = mail.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "Hi Sam,\n\nSee the sale (https://shop.example/sale)." in text  # the sample profile
    assert "Unsubscribe" in text
    html = mail.get_body(("html",)).get_content()
    assert 'href="https://cdn.example/s.css"' in html
    assert 'href="https://shop.example/sale"' not in html  # through the click redirect


async def test_a_template_over_a_limit_with_real_data_fails_the_send_only(
        replicas: tuple[Replica, Replica, httpx.AsyncClient], unique: str) -> None:
    a, _, http = replicas
    # fine on the sample context at save; over the limits with this customer's data
    r = await http.put(f"{a.url}/v1/templates/big-{unique}", json={
        "channel": "email", "subject": "x",
        "text": "{{ event.s | replace: 'a', event.r | replace: 'a', event.r "
                "| replace: 'a', event.r | replace: 'a', event.r }}"})
    assert r.status_code == 200, r.text
    heavy = command(f"big-{unique}", str(uuid.uuid4()),
                    context={"event": {"s": "a" * 100, "r": "a" * 100}})
    light = command(f"big-{unique}", str(uuid.uuid4()),
                    context={"event": {"s": "ab", "r": "c"}})
    await a.send(heavy, light)
    rows = {r["idempotency_key"]: r for r in await _rows(
        a.settings, [heavy.idempotency_key, light.idempotency_key])}
    assert rows[heavy.idempotency_key]["status"] == "failed"
    assert rows[heavy.idempotency_key]["error"].startswith("template limit")
    assert rows[light.idempotency_key]["status"] == "sent"
    assert (await http.get(f"{a.url}/readyz")).status_code == 200


async def test_code_hand_out_under_contention_from_two_engines(
        replicas: tuple[Replica, Replica, httpx.AsyncClient], unique: str) -> None:
    """The hand-out itself, hammered: 2 engines (two replicas' pools) x 30 concurrent
    transactions, 25 customers (each asked for about twice at once), 20 codes."""
    from services.messaging import store
    from services.messaging.store.codes import PoolEmpty, code_for

    a, _, http = replicas
    pool = f"hammer-{unique}"
    await http.put(f"{a.url}/v1/code-pools/{pool}", json={"generate": {"count": 20}})
    engines = [create_engine(a.settings.database_url) for _ in range(2)]
    customers = [f"c-{i}" for i in range(25)]

    async def one(engine: Any, customer: str) -> tuple[str, str | None]:
        async with store.transaction(engine) as db:
            try:
                return customer, await code_for(db, workspace_id="default", pool=pool,
                                                 profile_id=customer,
                                                 message_id=str(uuid.uuid4()))
            except PoolEmpty:
                return customer, None

    try:
        results = await asyncio.gather(*(one(engines[i % 2], customers[i % 25])
                                         for i in range(60)))
    finally:
        for engine in engines:
            await engine.dispose()
    per_customer: dict[str, set[str | None]] = {}
    for customer, got in results:
        per_customer.setdefault(customer, set()).add(got)
    codes_given = [c for got in per_customer.values() for c in got if c is not None]
    assert len(codes_given) == len(set(codes_given)) == 20  # all handed out, none twice
    for got in per_customer.values():  # one code per customer, whoever asked
        assert len(got - {None}) <= 1
    assert (await http.get(f"{a.url}/v1/code-pools/{pool}")).json()["remaining"] == 0


async def test_codes_taken_by_a_message_that_fails_unsent_go_back(
        replicas: tuple[Replica, Replica, httpx.AsyncClient], unique: str) -> None:
    a, _, http = replicas
    full, empty = f"full-{unique}", f"empty-{unique}"
    await http.put(f"{a.url}/v1/code-pools/{full}", json={"codes": ["F-1", "F-2"]})
    await http.put(f"{a.url}/v1/code-pools/{empty}", json={"codes": ["E-1"]})
    await http.put(f"{a.url}/v1/templates/e-{unique}", json={
        "channel": "email", "subject": "x", "text": f"{{{{ '{empty}' | code }}}}"})
    await http.put(f"{a.url}/v1/templates/two-{unique}", json={
        "channel": "email", "subject": "x",
        "text": f"{{{{ '{full}' | code }}}} {{{{ '{empty}' | code }}}}"})
    first = command(f"e-{unique}", str(uuid.uuid4()))  # takes the only E code
    await a.send(first)
    await _rows(a.settings, [first.idempotency_key])
    second = command(f"two-{unique}", str(uuid.uuid4()))  # F-? taken, then E empty
    await a.send(second)
    [row] = await _rows(a.settings, [second.idempotency_key])
    assert row["status"] == "failed" and row["error"] == f"code pool {empty} empty"
    assert (await http.get(f"{a.url}/v1/code-pools/{full}")).json()["remaining"] == 2
