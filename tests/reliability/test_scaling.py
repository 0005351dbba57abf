"""Messaging scaled 1 -> 3 -> 1 (`touchpoint serve` replicas in one consumer group, each a
static member) while 300 emails flow; the two extra replicas stop with SIGTERM. Reconcile:
nothing lost, nothing sent twice. Soak only (`make soak`): it takes about a minute."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select

from services.messaging.tables import messages
from shared.contracts.envelope import message_key
from shared.contracts.send import Channel, Recipient, SendCommand
from shared.db import create_engine
from shared.kafka import create_producer, publish
from shared.kafka.admin import ensure_topics
from shared.settings import Settings
from shared.testing.net import free_port
from tests.reliability.harness import SOAK, kill, ready, reconcile, recording_smtp, serve

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not SOAK, reason="soak only (TOUCHPOINT_SOAK=1, make soak)")]
SENDS = 300


@pytest.mark.timeout(300)
async def test_scale_messaging_1_3_1_under_load(settings: Settings,
                                                admin_headers: dict[str, str]) -> None:
    own = settings.model_copy(update={"topic_prefix": f"scale-{uuid.uuid4().hex[:8]}."})
    await ensure_topics(own)
    engine = create_engine(own.database_url)
    producer = create_producer(own, client_id="test-scale")
    await producer.start()
    with recording_smtp() as (smtp_url, smtp):
        env = {**os.environ, "TOUCHPOINT_ENV": "test", "TOUCHPOINT_DATABASE_URL":
               own.database_url, "TOUCHPOINT_KAFKA_BOOTSTRAP": own.kafka_bootstrap,
               "TOUCHPOINT_TOPIC_PREFIX": own.topic_prefix, "TOUCHPOINT_SMTP_URL": smtp_url,
               "TOUCHPOINT_BOOTSTRAP_ADMIN_KEY": admin_headers["Authorization"][7:],
               "TOUCHPOINT_CONSUMER_FETCH_MAX_WAIT_MS": "10"}
        ports = [free_port() for _ in range(3)]
        procs = [serve("messaging", env, ports[0])]
        try:
            await ready(f"http://127.0.0.1:{ports[0]}")
            async with httpx.AsyncClient(headers=admin_headers) as http:
                r = await http.put(f"http://127.0.0.1:{ports[0]}/v1/templates/scale", json={
                    "channel": "email", "subject": "Once", "text": "only once"})
                assert r.status_code == 200, r.text
            run = uuid.uuid4().hex[:8]
            cmds = [SendCommand(id=f"s-{run}-{n}", workspace_id="default",
                                profile_id=str(uuid.uuid4()), idempotency_key=f"s-{run}-{n}",
                                channel=Channel.email, template="scale",
                                to=Recipient(email=f"s{n}@example.com"),
                                requested_at=datetime.now(UTC)) for n in range(SENDS)]

            async def feed() -> None:  # ~20/s for 15 s
                for c in cmds:
                    await publish(producer, own.topic("send-commands"),
                                  [(message_key(c.workspace_id, c.profile_id), c)],
                                  topic_short="send-commands")
                    await asyncio.sleep(0.05)

            feeding = asyncio.create_task(feed())
            await asyncio.sleep(3)
            procs += [serve("messaging", env, p) for p in ports[1:]]  # 1 -> 3
            await asyncio.sleep(6)
            for p in procs[1:]:  # 3 -> 1, gracefully
                p.send_signal(signal.SIGTERM)
            for p in procs[1:]:
                await asyncio.to_thread(p.wait, 30)
            await feeding
            keys = [c.idempotency_key for c in cmds]
            deadline = asyncio.get_running_loop().time() + 120
            while True:
                async with engine.connect() as conn:
                    rows = {r["idempotency_key"]: dict(r) for r in (await conn.execute(
                        select(messages).where(messages.c.idempotency_key.in_(keys))
                    )).mappings()}
                if len(rows) == SENDS and all(r["status"] in ("sent", "unknown")
                                              for r in rows.values()):
                    break
                assert asyncio.get_running_loop().time() < deadline, len(rows)
                await asyncio.sleep(0.2)
            figures = reconcile("scale-1-3-1", rows, set(keys), smtp.delivered)
            figures.show()
            assert not figures.lost and not figures.duplicated and not figures.unexpected
            assert figures.unknown == 0  # nobody was killed
        finally:
            for p in procs:
                kill(p)
                await asyncio.to_thread(p.wait, 20)
            await producer.stop()
            await engine.dispose()
