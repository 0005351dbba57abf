"""Kill the messaging process between the provider call and the commit, restart it, and
count deliveries at the SMTP sink: exactly one."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy import select

from services.messaging.store import transaction
from services.messaging.store.sends import mark_sending
from services.messaging.tables import messages
from shared.contracts.envelope import message_key
from shared.contracts.send import Channel, Recipient, SendCommand
from shared.db import create_engine
from shared.kafka import create_producer, publish
from shared.kafka.admin import ensure_topics
from shared.settings import Settings
from tests.reliability.harness import email_template, service_env
from tests.support.net import free_port
from tests.support.processes import serve
from tests.support.ready import ready
from tests.support.smtp import serve_smtp

pytestmark = pytest.mark.integration


class KillingSink:
    """Keeps every email; on the first one it kills `victim` before answering 250."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.victim: int | None = None

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        if self.victim is not None:
            os.kill(self.victim, signal.SIGKILL)  # the provider has it; the commit never comes
            self.victim = None
        return "250 OK"


async def test_crash_after_provider_accepted_never_sends_twice(
        settings: Settings, admin_headers: dict[str, str]) -> None:
    own = settings.model_copy(update={"topic_prefix": f"crash-{uuid.uuid4().hex[:8]}."})
    await ensure_topics(own)
    engine = create_engine(own.database_url)
    producer = create_producer(own, client_id="test-crash")
    await producer.start()
    inbox = KillingSink()
    with serve_smtp(inbox) as smtp_url:
        port = free_port()
        env = service_env(own, admin_headers, TOUCHPOINT_SMTP_URL=smtp_url,
                          TOUCHPOINT_CONSUMER_SESSION_TIMEOUT_MS="6000")
        url = f"http://127.0.0.1:{port}"
        proc = serve("messaging", env, port)
        try:
            await email_template(url, admin_headers, "crash")
            profile = str(uuid.uuid4())

            def cmd(n: int) -> SendCommand:
                key = f"crash-{profile}-{n}"
                return SendCommand(id=key, workspace_id="default", profile_id=profile,
                                   idempotency_key=key, channel=Channel.email,
                                   template="crash", to=Recipient(email="ada@example.com"),
                                   requested_at=datetime.now(UTC))

            inbox.victim = proc.pid
            await publish(producer, own.topic("send-commands"),
                          [(message_key("default", profile), cmd(1))],
                          topic_short="send-commands")
            assert await asyncio.to_thread(proc.wait, 60) == -signal.SIGKILL
            assert len(inbox.messages) == 1
            async with engine.connect() as conn:
                status = (await conn.execute(select(messages.c.status).where(
                    messages.c.idempotency_key == "crash-" + profile + "-1"))).scalar()
            assert status == "sending"  # the outcome never committed: the window

            # same consumer group: re-reads the uncommitted command
            proc = serve("messaging", env, port)
            await ready(url)
            await publish(producer, own.topic("send-commands"),
                          [(message_key("default", profile), cmd(2))],
                          topic_short="send-commands")
            deadline = asyncio.get_running_loop().time() + 90
            while len(inbox.messages) < 2 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.1)
            # Same customer, same partition: the second is sent only after the first was
            # re-read, and the first was not sent again.
            ids = [m["X-Touchpoint-Message"] for m in inbox.messages]
            assert len(ids) == 2 and len(set(ids)) == 2, ids
            async with engine.connect() as conn:
                first = (await conn.execute(select(messages.c.status, messages.c.error).where(
                    messages.c.idempotency_key == "crash-" + profile + "-1"))).one()
            # Reported, not re-sent: the redelivered command found the row still `sending`.
            assert first.status == "unknown" and first.error.startswith("outcome unknown")
        finally:
            if proc.poll() is None:
                proc.terminate()
                await asyncio.to_thread(proc.wait, 20)
            await producer.stop()
            await engine.dispose()


async def test_a_retried_flush_keeps_the_marks_its_cut_off_commit_made(
        settings: Settings) -> None:
    """A COMMIT whose answer an outage cut off may have committed: the ledger retries the
    flush with the same stamp, and must read its own marks as its own (else those messages
    stay `sending`, never sent), while a mark of another flush is still refused."""
    engine = create_engine(settings.database_url)
    ids = [str(uuid.uuid4()) for _ in range(2)]
    try:
        async with engine.begin() as conn:
            await conn.execute(messages.insert(), [
                {"id": i, "workspace_id": "ws-mark", "idempotency_key": f"mark-{i}",
                 "profile_id": "p", "channel": "email", "template": "t", "status": "queued"}
                for i in ids])
        stamp = datetime.now(UTC)
        async with transaction(engine) as db:  # committed; pretend its answer was lost
            assert await mark_sending(db, ids[:1], stamp) == set(ids[:1])
        async with transaction(engine) as db:  # the retry: same stamp, same marks
            assert await mark_sending(db, ids, stamp) == set(ids)
        async with transaction(engine) as db:  # another flush never takes them
            assert await mark_sending(db, ids, datetime.now(UTC)) == set()
    finally:
        async with engine.begin() as conn:
            await conn.execute(messages.delete().where(messages.c.id.in_(ids)))
        await engine.dispose()
