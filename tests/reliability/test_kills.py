"""SIGKILL of a `touchpoint serve messaging` process in the middle of a flow of sends,
restart, and reconcile every accepted send with the recording SMTP server and Postgres.

Pass: nothing lost, nothing delivered twice; the messages left `unknown` are at most the
provider calls in flight at the kill, which the SMTP connection pool bounds (8), though
TOUCHPOINT_MESSAGING_CONCURRENCY allows 16 per wave, two waves in flight (the bound was 32
before): a message is marked `sending` only once it holds a pooled connection. Prints the
figures and the recovery time (kill to the first delivery after the restart)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select

from services.messaging.providers.email import Settings as SmtpSettings
from services.messaging.tables import messages
from shared.contracts.envelope import message_key
from shared.contracts.send import Channel, Recipient, SendCommand
from shared.db import create_engine
from shared.kafka import create_producer, publish
from shared.kafka.admin import ensure_topics
from shared.settings import Settings
from tests.reliability.harness import ROUNDS, kill, ready, reconcile, recording_smtp, serve
from tests.support.net import free_port

pytestmark = pytest.mark.integration
CONCURRENCY = 16  # per wave, two waves in flight: 32 marks allowed before, 8 connections
POOL = SmtpSettings.model_fields["pool_size"].default  # the default SMTP route's pool
SENDS = 60


@pytest.mark.timeout(300)
@pytest.mark.parametrize("round_", range(ROUNDS))
async def test_sigkill_messaging_mid_flow_loses_nothing_sends_nothing_twice(
        settings: Settings, admin_headers: dict[str, str], round_: int) -> None:
    own = settings.model_copy(update={"topic_prefix": f"kill-{uuid.uuid4().hex[:8]}."})
    await ensure_topics(own)
    engine = create_engine(own.database_url)
    producer = create_producer(own, client_id="test-kill")
    await producer.start()
    killed_at: list[float] = []
    with recording_smtp() as (smtp_url, smtp):
        port = free_port()
        env = {**os.environ, "TOUCHPOINT_ENV": "test", "TOUCHPOINT_DATABASE_URL":
               own.database_url, "TOUCHPOINT_KAFKA_BOOTSTRAP": own.kafka_bootstrap,
               "TOUCHPOINT_TOPIC_PREFIX": own.topic_prefix, "TOUCHPOINT_SMTP_URL": smtp_url,
               "TOUCHPOINT_BOOTSTRAP_ADMIN_KEY": admin_headers["Authorization"][7:],
               "TOUCHPOINT_CONSUMER_SESSION_TIMEOUT_MS": "6000",
               "TOUCHPOINT_CONSUMER_FETCH_MAX_WAIT_MS": "10",
               "TOUCHPOINT_MESSAGING_CONCURRENCY": str(CONCURRENCY)}
        url = f"http://127.0.0.1:{port}"
        proc = serve("messaging", env, port)
        try:
            await ready(url)
            async with httpx.AsyncClient(headers=admin_headers) as http:
                r = await http.put(f"{url}/v1/templates/kill", json={
                    "channel": "email", "subject": "Once", "text": "only once"})
                assert r.status_code == 200, r.text
            victim = proc.pid
            at = 10 + 7 * round_  # a different moment each round

            def on_data(received: int) -> None:
                if received >= at and not killed_at:
                    killed_at.append(time.monotonic())
                    os.kill(victim, signal.SIGKILL)

            smtp.on_data, smtp.delay = on_data, 0.02  # calls overlap: several in flight
            run = uuid.uuid4().hex[:8]
            cmds = [SendCommand(id=f"k-{run}-{n}", workspace_id="default",
                                profile_id=str(uuid.uuid4()), idempotency_key=f"k-{run}-{n}",
                                channel=Channel.email, template="kill",
                                to=Recipient(email=f"c{n}@example.com"),
                                requested_at=datetime.now(UTC)) for n in range(SENDS)]
            await publish(producer, own.topic("send-commands"),
                          [(message_key(c.workspace_id, c.profile_id), c) for c in cmds],
                          topic_short="send-commands")
            try:
                await asyncio.to_thread(proc.wait, 60)
            except Exception:
                async with engine.connect() as conn:
                    got = (await conn.execute(select(messages.c.status, messages.c.error).where(
                        messages.c.idempotency_key.like(f"k-{run}-%")))).all()
                raise AssertionError((smtp.received, got[:5], len(got))) from None
            assert proc.returncode == -signal.SIGKILL
            before = sum(smtp.received.values())
            proc = serve("messaging", env, port)
            keys = [c.idempotency_key for c in cmds]
            deadline = asyncio.get_running_loop().time() + 120
            first_after: float | None = None
            while True:
                if first_after is None and sum(smtp.received.values()) > before:
                    first_after = time.monotonic()
                async with engine.connect() as conn:
                    rows = {r["idempotency_key"]: dict(r) for r in (await conn.execute(
                        select(messages).where(messages.c.idempotency_key.in_(keys))
                    )).mappings()}
                if len(rows) == SENDS and all(r["status"] in ("sent", "unknown")
                                              for r in rows.values()):
                    break
                assert asyncio.get_running_loop().time() < deadline, \
                    {k: r["status"] for k, r in rows.items() if r["status"] != "sent"}
                await asyncio.sleep(0.1)
            figures = reconcile(f"kill-messaging#{round_}", rows, set(keys), smtp.delivered)
            figures.bound = (f"bound={POOL} (pool; concurrency {CONCURRENCY} x 2 waves) recovery="
                             f"{(first_after or time.monotonic()) - killed_at[0]:.1f}s")
            figures.show()
            assert not figures.lost and not figures.duplicated and not figures.unexpected
            assert 1 <= figures.unknown <= POOL
        finally:
            kill(proc)
            await asyncio.to_thread(proc.wait, 20)
            await producer.stop()
            await engine.dispose()
