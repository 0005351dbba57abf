"""Messaging end to end against real things: the Tansu broker, Postgres, an SMTP sink and
local HTTP servers standing in for the SMS provider, push services and webhook receivers.

One messaging app (its own topic prefix, so its own consumer groups) serves the module.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI, Request, Response
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from services.messaging.app import create_app
from services.messaging.tables import channels, messages
from shared.contracts.envelope import JourneyRef, message_key
from shared.contracts.profile import ChangeKind, ProfileChange
from shared.contracts.send import Channel, Recipient, SendCommand
from shared.db import create_engine
from shared.kafka import create_producer, publish
from shared.kafka.admin import ensure_topics
from shared.settings import Settings
from tests.support.net import free_port
from tests.support.servers import serve_app
from tests.support.smtp import Inbox
from tests.support.topics import read_until

pytestmark = pytest.mark.integration
LOOP = {"loop_scope": "session"}


class Stack:
    def __init__(self, settings: Settings, url: str, inbox: Inbox,
                 producer: AIOKafkaProducer, http: httpx.AsyncClient) -> None:
        self.settings, self.url, self.inbox, self.producer = settings, url, inbox, producer
        self.http = http
        self.engine = create_engine(settings.database_url)

    async def send(self, *cmds: SendCommand) -> None:
        await publish(self.producer, self.settings.topic("send-commands"),
                      [(message_key(c.workspace_id, c.profile_id), c) for c in cmds],
                      topic_short="send-commands")

    async def change(self, change: ProfileChange) -> None:
        await publish(self.producer, self.settings.topic("profile-changes"),
                      [(message_key(change.workspace_id, change.profile_id), change)],
                      topic_short="profile-changes")

    async def message(self, idempotency_key: str, *, until: set[str],
                      timeout: float = 30) -> dict[str, Any]:
        """The message row once its status is one of `until`."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            async with self.engine.connect() as conn:
                row = (await conn.execute(select(messages).where(
                    messages.c.idempotency_key == idempotency_key))).mappings().first()
            if row is not None and row["status"] in until:
                return dict(row)
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"message {idempotency_key}: {row and row['status']}")
            await asyncio.sleep(0.05)

    async def events(self, message_id: str, statuses: set[str]) -> list[dict[str, Any]]:
        def seen(records: list[Any]) -> bool:
            got = {v["status"] for v in map(_value, records) if v["message_id"] == message_id}
            return statuses <= got
        records = await read_until(self.settings.kafka_bootstrap,
                                   self.settings.topic("delivery-events"), seen)
        return [v for v in map(_value, records) if v["message_id"] == message_id]


def _value(record: Any) -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads(record.value)
    return value


@pytest_asyncio.fixture(scope="module", **LOOP)
async def stack(settings: Settings, smtp: tuple[str, Inbox],
                admin_headers: dict[str, str]) -> AsyncIterator[Stack]:
    port = free_port()
    own = settings.model_copy(update={"topic_prefix": f"msg-{uuid.uuid4().hex[:8]}."})
    await ensure_topics(own)
    app = create_app(own)
    app.state.messaging.settings.messaging_public_url = f"http://127.0.0.1:{port}"
    app.state.messaging.settings.messaging_retry_base_seconds = 0.01
    # The test's providers listen on loopback: the operator's allow, as for a private network.
    app.state.messaging.settings.messaging_allow_private_targets = True
    producer = create_producer(own, client_id="test-messaging")
    await producer.start()
    async with serve_app(app, port) as url, httpx.AsyncClient(headers=admin_headers,
                                                               timeout=10) as http:
        for _ in range(200):
            if (await http.get(f"{url}/readyz")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        yield Stack(own, url, smtp[1], producer, http)
    await producer.stop()


def command(channel: Channel, template: str, to: Recipient, *, profile: str | None = None,
            context: dict[str, Any] | None = None) -> SendCommand:
    key = f"test-{uuid.uuid4().hex}"
    return SendCommand(id=key, workspace_id="default", profile_id=profile or str(uuid.uuid4()),
                       idempotency_key=key, channel=channel, template=template, to=to,
                       journey=JourneyRef(key="welcome", version=1, stage="new", step="hello"),
                       context=context or {"profile": {"traits": {"first_name": "Ada"}}},
                       requested_at=datetime.now(UTC))


async def _mail_for(inbox: Inbox, message_id: str) -> EmailMessage:
    for _ in range(600):
        found = [m for m in inbox.messages if m["X-Touchpoint-Message"] == message_id]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise TimeoutError(message_id)


async def _template(s: Stack, key: str, body: dict[str, Any]) -> None:
    r = await s.http.put(f"{s.url}/v1/templates/{key}", json=body)
    assert r.status_code == 200, r.text


# -- email -------------------------------------------------------------------------------

async def test_email_content_headers_tracking_and_log(stack: Stack, unique: str) -> None:
    s = stack
    await _template(s, f"promo-{unique}", {
        "channel": "email", "subject": "Hi {{ profile.traits.first_name }}",
        "html": "<p>Hi {{ profile.traits.first_name }}, see "
                "<a href=\"https://shop.example/sale?a=1&amp;b=2\">the sale</a></p>",
        "text": "Hi {{ profile.traits.first_name }} ({{ event.plan | default: 'free' }})"})
    cmd = command(Channel.email, f"promo-{unique}", Recipient(email=f"{unique}@example.com"))
    await s.send(cmd)
    row = await s.message(cmd.idempotency_key, until={"sent", "failed"})
    assert row["status"] == "sent", row["error"]
    mail = await _mail_for(s.inbox, row["id"])
    assert mail["Subject"] == "Hi Ada" and mail["To"] == f"{unique}@example.com"
    unsubscribe = mail["List-Unsubscribe"].strip().strip("<>")
    assert unsubscribe.startswith(f"{s.url}/u/")
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = mail.get_body(("plain",)).get_content()
    assert "Hi Ada (free)" in text and f"Unsubscribe: {unsubscribe}" in text
    html = mail.get_body(("html",)).get_content()
    assert "https://shop.example/sale" not in html  # rewritten through the click redirect
    click = html.split('href="')[1].split('"')[0]
    pixel = html.split('<img src="')[1].split('"')[0]

    r = await s.http.get(click, follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "https://shop.example/sale?a=1&b=2"
    r = await s.http.get(pixel)
    assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
    tampered = click[:-3] + ("AAA" if not click.endswith("AAA") else "BBB")
    assert (await s.http.get(tampered, follow_redirects=False)).status_code == 404

    events = await s.events(row["id"], {"queued", "sent", "opened", "clicked"})
    clicked = next(e for e in events if e["status"] == "clicked")
    assert clicked["url"] == "https://shop.example/sale?a=1&b=2"
    assert clicked["journey"]["step"] == "hello" and clicked["channel"] == "email"

    r = await s.http.get(f"{s.url}/v1/messages/{row['id']}")
    body = r.json()
    assert body["opened_at"] and body["clicked_at"] and body["content"]["subject"] == "Hi Ada"
    r = await s.http.get(f"{s.url}/v1/messages", params={"journey": "welcome", "status": "sent"})
    assert row["id"] in [m["id"] for m in r.json()["items"]]

    # Messaging's own metrics: the send by channel and outcome, the provider call's latency.
    metrics = (await s.http.get(f"{s.url}/metrics")).text
    assert 'touchpoint_messaging_sends_total{channel="email",outcome="sent"}' in metrics
    assert 'touchpoint_messaging_provider_seconds_count{provider="' in metrics
    assert 'result="ok"}' in metrics


async def test_one_click_unsubscribe_suppresses_the_next_send(stack: Stack, unique: str) -> None:
    s = stack
    await _template(s, f"news-{unique}", {"channel": "email", "subject": "News",
                                          "text": "Hello {{ profile.traits.first_name }}"})
    profile = str(uuid.uuid4())
    first = command(Channel.email, f"news-{unique}", Recipient(email=f"{unique}@example.com"),
                    profile=profile)
    await s.send(first)
    row = await s.message(first.idempotency_key, until={"sent", "failed"})
    mail = await _mail_for(s.inbox, row["id"])
    unsubscribe = mail["List-Unsubscribe"].strip().strip("<>")
    page = await s.http.get(unsubscribe)
    assert page.status_code == 200 and "<form method=post>" in page.text  # GET changes nothing
    r = await s.http.post(unsubscribe, content=b"List-Unsubscribe=One-Click",
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200
    events = await s.events(row["id"], {"unsubscribed"})
    assert next(e for e in events if e["status"] == "unsubscribed")["reason"] == "email"

    again = command(Channel.email, f"news-{unique}", Recipient(email=f"{unique}@example.com"),
                    profile=profile)
    await s.send(again)
    row2 = await s.message(again.idempotency_key, until={"sent", "suppressed", "failed"})
    assert row2["status"] == "suppressed" and "unsubscribed from email" in row2["error"]
    failed = await s.events(row2["id"], {"failed"})
    assert "suppressed" in next(e for e in failed if e["status"] == "failed")["reason"]
    assert not [m for m in s.inbox.messages if m["X-Touchpoint-Message"] == row2["id"]]


async def test_redelivered_command_is_sent_once(stack: Stack, unique: str) -> None:
    s = stack
    await _template(s, f"once-{unique}", {"channel": "email", "subject": "Once", "text": "x"})
    cmd = command(Channel.email, f"once-{unique}", Recipient(email=f"{unique}@example.com"))
    await s.send(cmd, cmd)
    row = await s.message(cmd.idempotency_key, until={"sent"})
    await s.send(cmd)
    other = command(Channel.email, f"once-{unique}", Recipient(email=f"{unique}@example.com"),
                    profile=cmd.profile_id)
    await s.send(other)  # same customer, after the redelivery: proves it was consumed
    await s.message(other.idempotency_key, until={"sent"})
    assert len([m for m in s.inbox.messages if m["X-Touchpoint-Message"] == row["id"]]) == 1


async def test_redelivered_command_left_queued_is_sent_under_its_own_id(stack: Stack,
                                                                         unique: str) -> None:
    """A crash after the claim and before any provider call leaves the row `queued`: the
    redelivered command is sent once, rendered under the row's own message id."""
    s = stack
    await _template(s, f"left-{unique}", {"channel": "email", "subject": "Left",
                                          "text": "id {{ message_id }}"})
    cmd = command(Channel.email, f"left-{unique}", Recipient(email=f"{unique}@example.com"))
    message_id = str(uuid.uuid4())
    async with s.engine.begin() as conn:  # what the crashed claim left behind
        await conn.execute(messages.insert().values(
            id=message_id, workspace_id=cmd.workspace_id, idempotency_key=cmd.idempotency_key,
            profile_id=cmd.profile_id, channel="email", template=cmd.template, status="queued"))
    await s.send(cmd)
    row = await s.message(cmd.idempotency_key, until={"sent", "failed"})
    assert row["id"] == message_id and row["status"] == "sent"
    mail = await _mail_for(s.inbox, message_id)
    assert f"id {message_id}" in mail.get_body(("plain",)).get_content()


async def test_missing_variable_fails_the_send_with_the_reason(stack: Stack,
                                                                unique: str) -> None:
    s = stack
    await _template(s, f"strict-{unique}", {"channel": "email", "subject": "x", "strict": True,
                                            "text": "Your code: {{ event.code }}"})
    cmd = command(Channel.email, f"strict-{unique}", Recipient(email=f"{unique}@example.com"))
    await s.send(cmd)
    row = await s.message(cmd.idempotency_key, until={"sent", "failed"})
    assert row["status"] == "failed" and "code" in row["error"] and row["body"] is None


async def test_consent_and_erasure_from_profile_changes(stack: Stack, unique: str) -> None:
    s = stack
    await _template(s, f"cons-{unique}", {"channel": "email", "subject": "x", "text": "y"})
    profile = str(uuid.uuid4())
    sent = command(Channel.email, f"cons-{unique}", Recipient(email=f"{unique}@example.com"),
                   profile=profile)
    await s.send(sent)
    sent_row = await s.message(sent.idempotency_key, until={"sent"})
    now = datetime.now(UTC)
    await s.change(ProfileChange(id=f"c1-{unique}", workspace_id="default", profile_id=profile,
                                 kind=ChangeKind.consent_changed, occurred_at=now,
                                 data={"channel": "email", "subscribed": False,
                                       "source": "preference-center"}))
    await s.change(ProfileChange(id=f"c2-{unique}", workspace_id="default", profile_id=profile,
                                 kind=ChangeKind.erased, occurred_at=now))
    for _ in range(300):
        r = (await s.http.get(f"{s.url}/v1/messages/{sent_row['id']}")).json()
        if r["erased_at"]:
            break
        await asyncio.sleep(0.05)
    assert r["erased_at"] and r["content"] is None and r["recipient"] is None
    later = command(Channel.email, f"cons-{unique}", Recipient(email=f"{unique}@example.com"),
                    profile=profile)
    await _template(s, f"receipt-{unique}", {"channel": "email", "subject": "Receipt",
                                             "text": "y", "category": "transactional"})
    receipt = command(Channel.email, f"receipt-{unique}",
                      Recipient(email=f"{unique}@example.com"), profile=profile)
    await s.send(later, receipt)
    row = await s.message(later.idempotency_key, until={"sent", "suppressed"})
    assert row["status"] == "suppressed"
    row = await s.message(receipt.idempotency_key, until={"sent", "suppressed"})
    assert row["status"] == "suppressed" and "erased" in row["error"]


async def test_snapshot_consent_in_the_command_is_a_second_source(stack: Stack,
                                                                   unique: str) -> None:
    s = stack
    await _template(s, f"snap-{unique}", {"channel": "email", "subject": "x", "text": "y",
                                          "topic": "deals"})
    cmd = command(Channel.email, f"snap-{unique}", Recipient(email=f"{unique}@example.com"),
                  context={"profile": {"consent": {"email": True, "topic:deals": False}}})
    await s.send(cmd)
    row = await s.message(cmd.idempotency_key, until={"sent", "suppressed"})
    assert row["status"] == "suppressed" and "topic:deals" in row["error"]


# -- SMS, push, webhooks over local HTTP servers ------------------------------------------

class FakeProvider:
    """A local HTTP server that answers from a script per target and records requests."""

    def __init__(self) -> None:
        self.app = FastAPI()
        self.script: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self.requests: list[tuple[str, dict[str, str], bytes]] = []

        @self.app.post("/{path:path}")
        async def anything(path: str, request: Request) -> Response:
            body = await request.body()
            self.requests.append((path, dict(request.headers), body))
            form = dict(parse_qsl(body.decode(errors="replace")))
            key = form.get("To") if path.endswith("Messages.json") else path
            answers = self.script.get(str(key)) or [(201, {"sid": f"SM{len(self.requests)}"})]
            status, payload = answers.pop(0) if len(answers) > 1 else answers[0]
            headers = {"Retry-After": "0"} if status == 429 else {}
            return Response(json.dumps(payload), status_code=status, headers=headers,
                            media_type="application/json")


@pytest_asyncio.fixture(scope="module", **LOOP)
async def fake() -> AsyncIterator[tuple[FakeProvider, str]]:
    provider = FakeProvider()
    async with serve_app(provider.app) as url:
        yield provider, url


async def _channel(s: Stack, channel: str, provider: str, body: dict[str, Any]) -> None:
    r = await s.http.put(f"{s.url}/v1/channels/{channel}/{provider}", json=body)
    assert r.status_code == 200, r.text


async def test_sms_retries_429_503_marks_500_unknown_fails_fast_on_4xx(
        stack: Stack, unique: str, fake: tuple[FakeProvider, str]) -> None:
    s, (provider, url) = stack, fake
    await _channel(s, "sms", "twilio", {
        "settings": {"base_url": url, "account_sid": "AC123", "sender": "+15550001"},
        "credentials": {"auth_token": "secret-token-123456"}, "allow_private_targets": True})
    await _template(s, f"sms-{unique}", {"channel": "sms", "text": "Code {{ event.code }}"})
    provider.script["+1555429"] = [(429, {}), (201, {"sid": "SM-a"})]
    provider.script["+1555503"] = [(503, {}), (503, {}), (201, {"sid": "SM-b"})]
    provider.script["+1555500"] = [(500, {})]  # may have been accepted: not resent
    provider.script["+1555400"] = [(400, {"code": 21211, "message": "invalid To"})]
    provider.script["+1555422"] = [(422, {"message": "nope"})]
    cmds = {to: command(Channel.sms, f"sms-{unique}", Recipient(phone=to),
                        context={"event": {"code": "42"}})
            for to in ("+1555429", "+1555503", "+1555400", "+1555422", "+1555500")}
    await s.send(*cmds.values())
    rows = {to: await s.message(c.idempotency_key,
                                until={"sent", "failed", "bounced", "unknown"})
            for to, c in cmds.items()}
    assert rows["+1555429"]["status"] == "sent" and rows["+1555429"]["provider_message_id"] == \
        "SM-a"
    assert rows["+1555503"]["status"] == "sent"
    assert rows["+1555400"]["status"] == "bounced"
    assert rows["+1555422"]["status"] == "failed" and "422" in rows["+1555422"]["error"]
    assert rows["+1555500"]["status"] == "unknown" and "500" in rows["+1555500"]["error"]
    calls = [b for p, _h, b in provider.requests if p.endswith("Messages.json")]
    count = {to: sum(1 for b in calls if to.replace("+", "%2B").encode() in b) for to in cmds}
    assert count == {"+1555429": 2, "+1555503": 3, "+1555400": 1, "+1555422": 1,
                     "+1555500": 1}
    assert b"Body=Code+42" in calls[0]
    bounced = await s.events(rows["+1555400"]["id"], {"bounced"})
    assert next(e for e in bounced if e["status"] == "bounced")["address"] == "+1555400"

    # The dead number is now suppressed without calling the provider.
    again = command(Channel.sms, f"sms-{unique}", Recipient(phone="+1555400"),
                    context={"event": {"code": "1"}})
    await s.send(again)
    row = await s.message(again.idempotency_key, until={"sent", "suppressed", "failed"})
    assert row["status"] == "suppressed" and "undeliverable" in row["error"]

    # Credentials are never returned in full, and are not stored in the clear.
    shown = (await s.http.get(f"{s.url}/v1/channels/sms/twilio")).json()
    assert shown["credentials"] == {"auth_token": "****3456"}
    async with s.engine.connect() as conn:
        sealed = (await conn.execute(select(channels.c.secrets).where(
            channels.c.provider == "twilio"))).scalar()
    assert b"secret-token" not in sealed


def _subscription(endpoint: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(serialization.Encoding.X962,
                                           serialization.PublicFormat.UncompressedPoint)
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    return json.dumps({"endpoint": endpoint,
                       "keys": {"p256dh": b64(public), "auth": b64(b"0123456789abcdef")}})


async def test_web_push_and_fcm(stack: Stack, unique: str,
                                fake: tuple[FakeProvider, str]) -> None:
    s, (provider, url) = stack, fake
    vapid = ec.generate_private_key(ec.SECP256R1())
    raw = vapid.private_numbers().private_value.to_bytes(32, "big")
    await _channel(s, "push", "webpush", {
        "settings": {"subject": "mailto:ops@shop.example"},
        "credentials": {"vapid_private_key": base64.urlsafe_b64encode(raw).decode().rstrip("=")},
        "allow_private_targets": True})
    await _channel(s, "push", "fcm", {
        "settings": {"project_id": "shop", "base_url": url},
        "credentials": {"access_token": "ya29.test-token"}, "allow_private_targets": True})
    await _template(s, f"push-{unique}", {"channel": "push", "subject": "Hi",
                                          "text": "Back in stock"})
    live, gone = f"wp/{unique}/live", f"wp/{unique}/gone"
    provider.script[gone] = [(410, {})]
    provider.script["v1/projects/shop/messages:send"] = [(200, {"name": "projects/shop/m/1"})]
    cmd = command(Channel.push, f"push-{unique}", Recipient(push_tokens=[
        _subscription(f"{url}/{live}"), _subscription(f"{url}/{gone}"), "fcm-token-1"]))
    await s.send(cmd)
    row = await s.message(cmd.idempotency_key, until={"sent", "failed", "bounced"})
    assert row["status"] == "sent", row["error"]
    pushed = [(h, b) for p, h, b in provider.requests if p == live]
    assert pushed and pushed[0][0]["content-encoding"] == "aes128gcm"
    assert pushed[0][0]["authorization"].startswith("vapid t=")
    fcm = [(h, b) for p, h, b in provider.requests if p.endswith("messages:send")]
    assert fcm[0][0]["authorization"] == "Bearer ya29.test-token"
    assert json.loads(fcm[0][1])["message"]["token"] == "fcm-token-1"
    events = await s.events(row["id"], {"sent", "bounced"})
    bounced = [e for e in events if e["status"] == "bounced"]
    assert len(bounced) == 1 and gone in bounced[0]["address"]

    provider.script["v1/projects/shop/messages:send"] = [(404, {"error": {
        "status": "NOT_FOUND", "details": [{"errorCode": "UNREGISTERED"}]}})]
    dead = command(Channel.push, f"push-{unique}", Recipient(push_tokens=["fcm-token-old"]))
    await s.send(dead)
    row = await s.message(dead.idempotency_key, until={"sent", "failed", "bounced"})
    assert row["status"] == "bounced" and "unregistered" in row["error"]


async def test_webhook_signed_and_loopback_blocked_by_default(
        stack: Stack, unique: str, fake: tuple[FakeProvider, str]) -> None:
    s, (provider, url) = stack, fake
    secret = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    await _channel(s, "webhook", "webhook", {"credentials": {"signing_secret": secret}})
    blocked = command(Channel.webhook, f"hook-{unique}", Recipient(url=f"{url}/hook/{unique}"))
    await s.send(blocked)
    row = await s.message(blocked.idempotency_key, until={"sent", "failed"})
    assert row["status"] == "failed" and "blocked" in row["error"]
    assert not [p for p, _h, _b in provider.requests if p == f"hook/{unique}"]

    await _channel(s, "webhook", "webhook", {"allow_private_targets": True})  # keeps the secret
    provider.script[f"hook/{unique}"] = [(503, {}), (200, {})]
    allowed = command(Channel.webhook, f"hook-{unique}", Recipient(url=f"{url}/hook/{unique}"),
                      context={"event": {"event": "Order Completed"}})
    await s.send(allowed)
    row = await s.message(allowed.idempotency_key, until={"sent", "failed"})
    assert row["status"] == "sent", row["error"]
    calls = [(h, b) for p, h, b in provider.requests if p == f"hook/{unique}"]
    assert len(calls) == 2 and calls[0][0]["webhook-id"] == calls[1][0]["webhook-id"] == row["id"]
    payload = Webhook(secret).verify(calls[1][1], calls[1][0])
    assert payload["data"]["event"] == {"event": "Order Completed"}


# -- API edges ----------------------------------------------------------------------------

async def test_template_api_validation_preview_and_sandbox(stack: Stack, unique: str) -> None:
    s = stack
    r = await s.http.put(f"{s.url}/v1/templates/bad-{unique}",
                         json={"channel": "email", "subject": "x", "text": "{% if %}"})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "text"
    r = await s.http.put(f"{s.url}/v1/templates/bad-{unique}", json={"channel": "email",
                                                                     "text": "no subject"})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "subject"
    await _template(s, f"pv-{unique}", {"channel": "email", "subject": "Hi {{ profile.name }}",
                                        "html": "<b>{{ profile.name }}</b>"})
    r = await s.http.post(f"{s.url}/v1/templates/pv-{unique}/preview",
                          json={"profile": {"name": "<Ada>"}})
    assert r.status_code == 200 and r.json()["subject"] == "Hi <Ada>"
    assert "<b>&lt;Ada&gt;</b>" in r.json()["html"] and "Unsubscribe" in r.json()["html"]
    r = await s.http.post(f"{s.url}/v1/templates/pv-{unique}/preview", json={"profile": {}})
    assert r.status_code == 200 and r.json()["subject"] == "Hi"  # lax: blank, and listed
    assert [(u["name"], u["part"]) for u in r.json()["undefined"]] == [
        ("profile.name", "subject"), ("profile.name", "html")]
    await _template(s, f"pv-{unique}", {"channel": "email", "subject": "Hi {{ profile.name }}",
                                        "html": "<b>{{ profile.name }}</b>", "strict": True})
    r = await s.http.post(f"{s.url}/v1/templates/pv-{unique}/preview", json={"profile": {}})
    assert r.status_code == 422 and "name" in r.json()["detail"]
    # a missing partial (no file system behind `include`) and a loop over the limit are
    # refused at save, with their place
    for escape in ("{% include 'etc/passwd' %}", "{% for i in (1..100000000) %}x{% endfor %}"):
        r = await s.http.put(f"{s.url}/v1/templates/esc-{unique}",
                             json={"channel": "sms", "text": escape})
        assert r.status_code == 400, (escape, r.text)
    await _template(s, f"esc-{unique}", {"channel": "sms", "strict": True,
                                         "text": "{{ profile.__class__.__mro__ }}"})
    r = await s.http.post(f"{s.url}/v1/templates/esc-{unique}/preview",
                          json={"profile": {"name": "x"}})
    assert r.status_code == 422, r.text
    r = await s.http.put(f"{s.url}/v1/channels/sms/smtp", json={"settings": {}})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "provider"
    r = await s.http.put(f"{s.url}/v1/channels/sms/twilio", json={
        "settings": {"account_sid": "AC1", "sender": "+1"}, "credentials": {}})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "credentials.auth_token"
    r = await s.http.get(f"{s.url}/v1/templates", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


async def test_provider_status_webhooks_are_signature_checked(stack: Stack, unique: str
                                                              ) -> None:
    s = stack
    secret = "whsec_" + base64.b64encode(b"status-secret-0123456789").decode()
    await _channel(s, "email", "smtp", {
        "settings": {"host": "127.0.0.1", "port": int(s.settings.smtp_url.rsplit(":", 1)[1]),
                     "sender": "shop@example.com"},
        "credentials": {"status_webhook_secret": secret}, "allow_private_targets": True})
    await _template(s, f"st-{unique}", {"channel": "email", "subject": "x", "text": "y"})
    cmd = command(Channel.email, f"st-{unique}", Recipient(email=f"{unique}@example.com"))
    await s.send(cmd)
    row = await s.message(cmd.idempotency_key, until={"sent"})
    body = json.dumps({"message_id": row["id"], "status": "bounced", "reason": "550 5.1.1"})
    endpoint = f"{s.url}/v1/providers/smtp/status/default"
    now = datetime.now(UTC)
    headers = {"webhook-id": "evt-1", "webhook-timestamp": str(int(now.timestamp())),
               "webhook-signature": Webhook(secret).sign("evt-1", now, body)}
    forged = {**headers, "webhook-signature": "v1,AAAA"}
    assert (await s.http.post(endpoint, content=body, headers=forged)).status_code == 401
    assert (await s.http.post(endpoint, content=body, headers=headers)).status_code == 204
    events = await s.events(row["id"], {"bounced"})
    assert next(e for e in events if e["status"] == "bounced")["address"] == \
        f"{unique}@example.com"
    again = command(Channel.email, f"st-{unique}", Recipient(email=f"{unique}@example.com"))
    await s.send(again)
    assert (await s.message(again.idempotency_key, until={"sent", "suppressed"}))["status"] \
        == "suppressed"
    r = await s.http.delete(f"{s.url}/v1/channels/email/smtp")
    assert r.status_code == 204


async def test_twilio_status_callback_is_signed_and_applied(
        stack: Stack, unique: str, fake: tuple[FakeProvider, str]) -> None:
    s, (provider, url) = stack, fake
    token = "status-auth-token-0001"
    await _channel(s, "sms", "twilio", {
        "settings": {"base_url": url, "account_sid": "AC123", "sender": "+15550001"},
        "credentials": {"auth_token": token}, "allow_private_targets": True})
    await _template(s, f"tw-{unique}", {"channel": "sms", "text": "hello"})
    phone = f"+1777{int(unique[:6], 16) % 10**6:06d}"
    provider.script[phone] = [(201, {"sid": f"SM{unique}"})]
    cmd = command(Channel.sms, f"tw-{unique}", Recipient(phone=phone))
    await s.send(cmd)
    row = await s.message(cmd.idempotency_key, until={"sent", "failed"})
    assert row["status"] == "sent" and row["provider_message_id"] == f"SM{unique}"
    sent = next(b for p, _h, b in provider.requests if phone.replace("+", "%2B").encode() in b)
    callback = dict(parse_qsl(sent.decode()))["StatusCallback"]
    assert callback == f"{s.url}/v1/providers/twilio/status/default"

    form = {"MessageSid": f"SM{unique}", "MessageStatus": "delivered", "AccountSid": "AC123"}
    signed = callback + "".join(f"{k}{form[k]}" for k in sorted(form))
    good = base64.b64encode(hmac.new(token.encode(), signed.encode(), hashlib.sha1).digest())
    post = {"content": urlencode(form), "headers": {
        "content-type": "application/x-www-form-urlencoded", "x-twilio-signature": ""}}
    post["headers"]["x-twilio-signature"] = "bad"
    assert (await s.http.post(callback, **post)).status_code == 401
    post["headers"]["x-twilio-signature"] = good.decode()
    assert (await s.http.post(callback, **post)).status_code == 204
    row = await s.message(cmd.idempotency_key, until={"delivered"})
    assert row["delivered_at"] is not None
    await s.events(row["id"], {"delivered"})


async def test_address_changed_and_merge_reach_send_time(stack: Stack, unique: str) -> None:
    s = stack
    await _template(s, f"addr-{unique}", {"channel": "email", "subject": "x", "text": "y"})
    dead_profile, old, survivor = (str(uuid.uuid4()) for _ in range(3))
    now = datetime.now(UTC)
    await s.change(ProfileChange(
        id=f"a-{unique}", workspace_id="default", profile_id=dead_profile, occurred_at=now,
        kind=ChangeKind.address_changed,
        data={"channel": "email", "deliverable": False, "reason": "hard bounce",
              "address": f"Dead-{unique}@Example.com"}))
    await s.change(ProfileChange(
        id=f"u-{unique}", workspace_id="default", profile_id=old, occurred_at=now,
        kind=ChangeKind.consent_changed, data={"channel": "email", "subscribed": False}))
    await s.change(ProfileChange(
        id=f"m-{unique}", workspace_id="default", profile_id=survivor, occurred_at=now,
        kind=ChangeKind.merged, data={"merged_ids": [old]}))
    # The consumer applies changes in order per profile, not across profiles: poll.
    for _ in range(100):
        bounced = command(Channel.email, f"addr-{unique}",
                          Recipient(email=f"dead-{unique}@example.com"), profile=dead_profile)
        merged = command(Channel.email, f"addr-{unique}", Recipient(email=f"m-{unique}@x.io"),
                         profile=survivor)
        await s.send(bounced, merged)
        rows = [await s.message(c.idempotency_key, until={"sent", "suppressed"})
                for c in (bounced, merged)]
        if all(r["status"] == "suppressed" for r in rows):
            break
        await asyncio.sleep(0.2)
    assert [r["status"] for r in rows] == ["suppressed"] * 2, rows
    assert "undeliverable" in rows[0]["error"] and "unsubscribed from email" in rows[1]["error"]


async def test_deliverable_changes_of_one_batch_keep_their_order(stack: Stack,
                                                                 unique: str) -> None:
    """Deliverable changes go out as one statement: a later undeliverable one still wins,
    an earlier one is still cleared."""
    from types import SimpleNamespace

    from services.messaging.domain.addresses import address_hash
    from services.messaging.profile_changes import handle_profile_changes
    from services.messaging.tables import undeliverable
    from shared.kafka import Record

    now = datetime.now(UTC)
    cleared, bounced, fresh = (f"{n}-{unique}@example.com" for n in ("c", "b", "f"))

    def change(n: int, address: str, deliverable: bool) -> ProfileChange:
        return ProfileChange(
            id=f"d{n}-{unique}", workspace_id="default", profile_id=str(uuid.uuid4()),
            occurred_at=now, kind=ChangeKind.address_changed,
            data={"channel": "email", "deliverable": deliverable, "address": address,
                  "reason": "hard bounce"})

    batch = [change(0, cleared, False), change(1, cleared, True), change(2, fresh, True),
             change(3, bounced, True), change(4, bounced, False)]
    records = [Record(c, "profile-changes", 0, i, None, None) for i, c in enumerate(batch)]
    await handle_profile_changes(SimpleNamespace(engine=stack.engine), records)  # type: ignore[arg-type]
    async with stack.engine.connect() as conn:
        rows = set((await conn.execute(select(undeliverable.c.address_hash).where(
            undeliverable.c.address_hash.in_(
                [address_hash("email", a) for a in (cleared, bounced, fresh)])))).scalars())
    assert rows == {address_hash("email", bounced)}


async def test_a_batch_of_deliverable_changes_is_one_statement_and_idempotent(
        stack: Stack, unique: str) -> None:
    """A batch of deliverable address changes and kinds messaging ignores is the claim and
    the DELETE in one statement (no BEGIN, no COMMIT): the address is cleared, the ids are
    claimed, and a redelivered change never clears an address a later change marked
    undeliverable."""
    from types import SimpleNamespace

    from services.messaging.domain.addresses import address_hash
    from services.messaging.profile_changes import CONSUMER, handle_profile_changes
    from services.messaging.tables import inbox, undeliverable
    from shared.kafka import Record

    now = datetime.now(UTC)
    address = f"x-{unique}@example.com"
    rt = SimpleNamespace(engine=stack.engine)

    class NoTransaction:
        """The engine, but opening a transaction fails the test."""

        def connect(self) -> Any:
            return stack.engine.connect()

        def begin(self) -> Any:
            raise AssertionError("a transaction for a batch of deliverable changes")

    one_statement = SimpleNamespace(engine=NoTransaction())

    def change(n: int, kind: ChangeKind, data: dict[str, Any]) -> Record:
        return Record(ProfileChange(
            id=f"o{n}-{unique}", workspace_id="default", profile_id=str(uuid.uuid4()),
            occurred_at=now, kind=kind, data=data), "profile-changes", 0, n, None, None)

    async def undeliverable_now() -> bool:
        async with stack.engine.connect() as conn:
            return bool((await conn.execute(select(undeliverable.c.address_hash).where(
                undeliverable.c.address_hash == address_hash("email", address)))).first())

    await handle_profile_changes(rt, [change(0, ChangeKind.address_changed, {  # type: ignore[arg-type]
        "channel": "email", "deliverable": False, "address": address, "reason": "bounce"})])
    assert await undeliverable_now()

    clears = [change(1, ChangeKind.traits_changed, {"traits": ["plan"]}),
              change(2, ChangeKind.address_changed, {"channel": "email", "deliverable": True,
                                                     "address": address}),
              change(3, ChangeKind.segment_entered, {"segment": "vip"})]
    await handle_profile_changes(one_statement, clears)  # type: ignore[arg-type]
    assert not await undeliverable_now()
    async with stack.engine.connect() as conn:
        claimed = set((await conn.execute(select(inbox.c.message_id).where(
            inbox.c.consumer == CONSUMER,
            inbox.c.message_id.in_([r.value.dedupe_id() for r in clears])))).scalars())
    assert claimed == {r.value.dedupe_id() for r in clears}

    # Marked undeliverable again; the deliverable change redelivered: claimed, so no clear.
    await handle_profile_changes(rt, [change(4, ChangeKind.address_changed, {  # type: ignore[arg-type]
        "channel": "email", "deliverable": False, "address": address, "reason": "bounce"})])
    await handle_profile_changes(one_statement, clears)  # type: ignore[arg-type]
    assert await undeliverable_now()
