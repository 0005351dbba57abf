"""Provider behaviour under faults, against the real broker and Postgres, one messaging app in
process with a recording SMTP server and a recording HTTP (Twilio-shaped) provider:
421/451 retried durably until sent, 550 bounces and suppresses the address, a send past its
`expires_at` stops retrying, 429 honours Retry-After (in process when short, durably when
long), an SMS 500 is reported `unknown` and resent only by an operator.
(Push 404/410 -> bounced with the token: tests/integration/test_messaging_pipeline.py.)
Also the operator's tools on the same stack: `touchpoint messages resend --unknown`, and
dead letters listed and replayed (`/v1/dlq`, `touchpoint dlq`)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from sqlalchemy import select

from services.messaging.app import create_app
from services.messaging.tables import messages
from shared.contracts.envelope import message_key
from shared.contracts.send import Channel, Recipient, SendCommand
from shared.db import create_engine
from shared.kafka import create_producer, publish
from shared.kafka.admin import ensure_topics
from shared.settings import Settings
from tests.reliability.harness import RecordingHttp, RecordingSmtp, reconcile, recording_smtp
from tests.support.servers import serve_app

pytestmark = pytest.mark.integration
LOOP = {"loop_scope": "session"}
FINAL = {"sent", "failed", "bounced", "unknown", "expired", "suppressed"}


class Stack:
    def __init__(self, settings: Settings, url: str, http: httpx.AsyncClient,
                 producer: AIOKafkaProducer, smtp: RecordingSmtp, provider: RecordingHttp,
                 provider_url: str) -> None:
        self.settings, self.url, self.http, self.producer = settings, url, http, producer
        self.smtp, self.provider, self.provider_url = smtp, provider, provider_url
        self.engine = create_engine(settings.database_url)

    async def send(self, *cmds: SendCommand) -> None:
        await publish(self.producer, self.settings.topic("send-commands"),
                      [(message_key(c.workspace_id, c.profile_id), c) for c in cmds],
                      topic_short="send-commands")

    async def rows(self, keys: list[str], until: set[str] = FINAL,
                   timeout: float = 60) -> dict[str, dict[str, Any]]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            async with self.engine.connect() as conn:
                found = {r["idempotency_key"]: dict(r) for r in (await conn.execute(
                    select(messages).where(messages.c.idempotency_key.in_(keys))
                )).mappings()}
            if len(found) == len(keys) and all(r["status"] in until for r in found.values()):
                return found
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError({k: r["status"] for k, r in found.items()})
            await asyncio.sleep(0.1)


@pytest_asyncio.fixture(scope="module", **LOOP)
async def stack(settings: Settings, admin_headers: dict[str, str]) -> AsyncIterator[Stack]:
    provider = RecordingHttp()
    with recording_smtp() as (smtp_url, smtp):
        own = settings.model_copy(update={"topic_prefix": f"rel-{uuid.uuid4().hex[:8]}.",
                                          "smtp_url": smtp_url})
        await ensure_topics(own)
        app = create_app(own)
        ms = app.state.messaging.settings
        ms.messaging_provider_attempts = 1  # every transient failure goes the durable way
        ms.messaging_allow_private_targets = True  # the recording providers are on loopback
        ms.messaging_retry_delay_seconds = 0.3
        ms.messaging_retry_max_delay_seconds = 1.0
        producer = create_producer(own, client_id="test-reliability")
        await producer.start()
        async with serve_app(provider.app) as provider_url, serve_app(app) as url, \
                httpx.AsyncClient(headers=admin_headers, timeout=10) as http:
            for _ in range(200):
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            yield Stack(own, url, http, producer, smtp, provider, provider_url)
        await producer.stop()


def command(channel: Channel, template: str, to: Recipient, **extra: Any) -> SendCommand:
    key = f"rel-{uuid.uuid4().hex}"
    return SendCommand(id=key, workspace_id="default", profile_id=str(uuid.uuid4()),
                       idempotency_key=key, channel=channel, template=template, to=to,
                       requested_at=datetime.now(UTC), **extra)


async def _put(s: Stack, path: str, body: dict[str, Any]) -> None:
    r = await s.http.put(f"{s.url}{path}", json=body)
    assert r.status_code == 200, r.text


async def test_smtp_transient_retried_durably_550_suppresses_expiry_stops(
        stack: Stack, unique: str) -> None:
    s = stack
    await _put(s, f"/v1/templates/mail-{unique}", {"channel": "email", "subject": "Hi",
                                                   "text": "hello"})
    slow, gone, late = (f"{n}-{unique}@example.com" for n in ("slow", "gone", "late"))
    s.smtp.data[slow] = [451, 421, 250]  # greylisting, then a busy server, then accepted
    s.smtp.rcpt[gone] = 550
    s.smtp.data[late] = [451]  # forever
    cmds = {
        slow: command(Channel.email, f"mail-{unique}", Recipient(email=slow)),
        gone: command(Channel.email, f"mail-{unique}", Recipient(email=gone)),
        late: command(Channel.email, f"mail-{unique}", Recipient(email=late),
                      expires_at=datetime.now(UTC) + timedelta(seconds=1.5)),
    }
    await s.send(*cmds.values())
    rows = await s.rows([c.idempotency_key for c in cmds.values()])
    by_to = {to: rows[c.idempotency_key] for to, c in cmds.items()}
    assert by_to[slow]["status"] == "sent" and by_to[slow]["attempts"] == 3
    assert s.smtp.attempts[slow] == 3 and s.smtp.delivered[by_to[slow]["id"]] == 1
    assert by_to[gone]["status"] == "bounced" and s.smtp.attempts[gone] == 0
    assert by_to[late]["status"] == "expired" and by_to[late]["command"] is None
    # the suppressed address is not tried again
    again = command(Channel.email, f"mail-{unique}", Recipient(email=gone))
    await s.send(again)
    row = (await s.rows([again.idempotency_key]))[again.idempotency_key]
    assert row["status"] == "suppressed" and "undeliverable" in row["error"]
    figures = reconcile("smtp-faults", {to: by_to[to] for to in (slow,)}, {slow},
                        Counter({by_to[slow]["id"]: s.smtp.delivered[by_to[slow]["id"]]}))
    figures.show()
    assert not figures.lost and not figures.duplicated


async def test_sms_429_retry_after_and_500_unknown_then_resend(stack: Stack,
                                                               unique: str) -> None:
    s = stack
    await _put(s, "/v1/channels/sms/twilio", {
        "settings": {"base_url": s.provider_url, "account_sid": "AC123", "sender": "+15550001"},
        "credentials": {"auth_token": "secret-token-123456"}, "allow_private_targets": True})
    await _put(s, f"/v1/templates/sms-{unique}", {"channel": "sms", "text": "Code 42"})
    brief, long_, maybe = "+1555100", "+1555200", "+1555300"
    s.provider.script[brief] = [(429, {}, {"Retry-After": "1"}), (201, {"sid": "SM-a"}, {})]
    s.provider.script[long_] = [(429, {}, {"Retry-After": "3600"})]
    s.provider.script[maybe] = [(500, {}, {}), (201, {"sid": "SM-c"}, {})]
    cmds = {to: command(Channel.sms, f"sms-{unique}", Recipient(phone=to))
            for to in (brief, long_, maybe)}
    started = datetime.now(UTC)
    await s.send(*cmds.values())
    rows = await s.rows([c.idempotency_key for c in cmds.values()],
                        until=FINAL | {"retrying"})
    rows = await s.rows([cmds[brief].idempotency_key])  # the 1 s one finishes
    assert rows[cmds[brief].idempotency_key]["status"] == "sent"
    calls = [t for k, t in s.provider.calls if k == brief]
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.95  # Retry-After honoured
    waiting = (await s.rows([cmds[long_].idempotency_key], until={"retrying"}))[
        cmds[long_].idempotency_key]
    assert waiting["retry_at"] >= started + timedelta(seconds=3500)  # durable, not in memory

    unknown = (await s.rows([cmds[maybe].idempotency_key]))[cmds[maybe].idempotency_key]
    assert unknown["status"] == "unknown" and s.provider.count(maybe) == 1
    listed = (await s.http.get(f"{s.url}/v1/messages", params={"status": "unknown"})).json()
    assert unknown["id"] in {m["id"] for m in listed["items"]}
    r = await s.http.post(f"{s.url}/v1/messages/{unknown['id']}/resend")
    assert r.status_code == 202, r.text
    assert r.json()["previous_status"] == "unknown" and "twice" in r.json()["duplicate_risk"]
    assert r.json() == {**r.json(), "id": unknown["id"], "status": "retrying"}
    again = (await s.rows([cmds[maybe].idempotency_key], until={"sent"}))[
        cmds[maybe].idempotency_key]
    assert again["id"] == unknown["id"] and s.provider.count(maybe) == 2
    r = await s.http.post(f"{s.url}/v1/messages/{unknown['id']}/resend")
    assert r.status_code == 409 and r.json()["field"] == "status"
    r = await s.http.post(f"{s.url}/v1/messages/{uuid.uuid4()}/resend")
    assert r.status_code == 404


def _cli(*args: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    from touchpoint.cli import app
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


async def test_resend_unknown_from_the_cli(stack: Stack, unique: str,
                                          admin_headers: dict[str, str]) -> None:
    s = stack
    await _put(s, "/v1/channels/sms/twilio", {
        "settings": {"base_url": s.provider_url, "account_sid": "AC123", "sender": "+15550001"},
        "credentials": {"auth_token": "secret-token-123456"}, "allow_private_targets": True})
    await _put(s, f"/v1/templates/cli-{unique}", {"channel": "sms", "text": "Hi"})
    to = "+1555" + str(uuid.uuid4().int)[:6]
    s.provider.script[to] = [(502, {}, {}), (201, {"sid": "SM-z"}, {})]
    cmd = command(Channel.sms, f"cli-{unique}", Recipient(phone=to))
    await s.send(cmd)
    row = (await s.rows([cmd.idempotency_key]))[cmd.idempotency_key]
    assert row["status"] == "unknown"
    code, out = await asyncio.to_thread(
        _cli, "messages", "resend", "--unknown", "--yes", "--url", s.url,
        "--admin-key", admin_headers["Authorization"][7:])
    assert code == 0, out
    # (other tests' unknown messages of the workspace are resent too: at least this one)
    assert "refused 0" in out and "duplicates" in out, out
    row = (await s.rows([cmd.idempotency_key], until={"sent"}))[cmd.idempotency_key]
    assert s.provider.count(to) == 2


async def test_dead_letters_listed_filtered_and_replayed(stack: Stack, unique: str,
                                                         admin_headers: dict[str, str]) -> None:
    s = stack
    poison = f"{{not a send command {unique}".encode()
    await s.producer.send_and_wait(s.settings.topic("send-commands"), poison, key=b"k")
    consumer = "messaging.send-commands"

    async def letters(**params: Any) -> list[dict[str, Any]]:
        r = await s.http.get(f"{s.url}/v1/dlq", params={"consumer": consumer, **params})
        assert r.status_code == 200, r.text
        return [d for d in r.json()["items"] if unique in (d["value"] or "")]

    for _ in range(100):
        if found := await letters(error="InvalidMessage"):
            break
        await asyncio.sleep(0.2)
    assert len(found) == 1 and found[0]["topic"] == s.settings.topic("send-commands")
    assert await letters(error="no such error") == []
    assert await letters(since="2999-01-01T00:00:00Z") == []
    r = await s.http.get(f"{s.url}/v1/dlq", params={"consumer": "profile.events"})
    assert r.status_code == 422 and r.json()["field"] == "consumer"
    code, out = await asyncio.to_thread(
        _cli, "dlq", "list", "--consumer", consumer, "--error", "InvalidMessage",
        "--url", s.url, "--admin-key", admin_headers["Authorization"][7:])
    assert code == 0 and "InvalidMessage" in out, out

    ref = {"partition": found[0]["partition"], "offset": found[0]["offset"]}
    r = await s.http.post(f"{s.url}/v1/dlq/replay", json={"consumer": consumer,
                                                          "records": [ref]})
    assert r.status_code == 200 and r.json()["replayed"] == 1, r.text
    # Still poison: read again by the consumer, dead-lettered a second time.
    for _ in range(100):
        if len(again := await letters()) == 2:
            break
        await asyncio.sleep(0.2)
    assert len(again) == 2


async def test_status_webhooks_duplicated_out_of_order_unsigned_or_replayed(
        stack: Stack, unique: str) -> None:
    import base64
    import json

    from standardwebhooks.webhooks import Webhook

    s = stack
    secret = "whsec_" + base64.b64encode(b"status-secret-0123456789").decode()
    host, port = s.settings.smtp_url.rsplit("/", 1)[1].split(":")
    await _put(s, "/v1/channels/email/smtp", {
        "settings": {"host": host, "port": int(port), "sender": "shop@example.com"},
        "credentials": {"status_webhook_secret": secret}, "allow_private_targets": True})
    try:
        await _put(s, f"/v1/templates/wh-{unique}", {"channel": "email", "subject": "x",
                                                     "text": "y"})
        cmd = command(Channel.email, f"wh-{unique}", Recipient(email=f"wh-{unique}@example.com"))
        await s.send(cmd)
        row = (await s.rows([cmd.idempotency_key], until={"sent"}))[cmd.idempotency_key]
        endpoint = f"{s.url}/v1/providers/smtp/status/default"

        def signed(status: str, at: datetime, event_id: str) -> tuple[str, dict[str, str]]:
            body = json.dumps({"message_id": row["id"], "status": status, "reason": "550"})
            return body, {"webhook-id": event_id, "webhook-timestamp": str(int(at.timestamp())),
                          "webhook-signature": Webhook(secret).sign(event_id, at, body)}

        now = datetime.now(UTC)
        body, headers = signed("bounced", now, "evt-b")
        unsigned = {k: v for k, v in headers.items() if k != "webhook-signature"}
        forged = {**headers, "webhook-signature": "v1,AAAA"}
        old_body, old = signed("bounced", now - timedelta(minutes=6), "evt-old")
        assert (await s.http.post(endpoint, content=body, headers=unsigned)).status_code in (
            400, 401)
        assert (await s.http.post(endpoint, content=body, headers=forged)).status_code == 401
        assert (await s.http.post(endpoint, content=old_body, headers=old)).status_code == 401
        async with s.engine.connect() as conn:
            status = (await conn.execute(select(messages.c.status).where(
                messages.c.id == row["id"]))).scalar()
        assert status == "sent"  # none of those changed anything
        for _ in range(2):  # duplicated
            assert (await s.http.post(endpoint, content=body, headers=headers)).status_code \
                == 204
        late_body, late = signed("delivered", now, "evt-d")  # delivered after bounced
        assert (await s.http.post(endpoint, content=late_body, headers=late)).status_code == 204
        async with s.engine.connect() as conn:
            final = (await conn.execute(select(messages.c.status, messages.c.delivered_at)
                                        .where(messages.c.id == row["id"]))).one()
        assert final.status == "bounced" and final.delivered_at is None
    finally:
        r = await s.http.delete(f"{s.url}/v1/channels/email/smtp")
        assert r.status_code == 204


async def test_rate_limit_paces_sends_before_they_are_marked_sending(stack: Stack,
                                                                     unique: str) -> None:
    s = stack
    channel = {"settings": {"base_url": s.provider_url, "account_sid": "AC123",
                            "sender": "+15550001"},
               "credentials": {"auth_token": "secret-token-123456"},
               "allow_private_targets": True}
    await _put(s, "/v1/channels/sms/twilio", {**channel, "rate_per_second": 5})
    try:
        await _put(s, f"/v1/templates/rate-{unique}", {"channel": "sms", "text": "Hi"})
        tos = [f"+1666{n:03d}{str(uuid.uuid4().int)[:4]}" for n in range(10)]
        cmds = [command(Channel.sms, f"rate-{unique}", Recipient(phone=to)) for to in tos]
        await s.send(*cmds)
        await s.rows([c.idempotency_key for c in cmds], until={"sent"})
        times = sorted(t for k, t in s.provider.calls if k in set(tos))
        assert len(times) == 10
        # a burst of 5, then one every 0.2 s: the 10th about 1 s after the first
        assert times[-1] - times[0] >= 0.9, times
    finally:
        await _put(s, "/v1/channels/sms/twilio", channel)
