"""The abuse suite's closing checks (the file sorts last, so they run after every other test
of the suite): nothing it sent was accepted and then dead-lettered, and no log line of any
service carries a seeded email, phone or key."""

from __future__ import annotations

import uuid

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.integration.profile_support import eventually
from tests.security.support import Stack

pytestmark = pytest.mark.integration
# The test's own HTTP clients log the URLs they call (query strings included): they are the
# attacker's side, not a service's log.
CLIENT_LOGGERS = ('"logger":"httpx"', '"logger":"httpcore', '"logger":"urllib3',
                  '"logger":"hypothesis', '"logger":"schemathesis')


async def test_nothing_accepted_was_dead_lettered(stack: Stack) -> None:
    # Sentinels on several keys (so on every partition, most likely): once profile applied
    # them, it has been through what the suite sent before them.
    users = [f"sentinel-{i}-{uuid.uuid4().hex[:8]}" for i in range(6)]
    for user in users:
        r = await stack.http.post(stack.url("ingest", "/v1/identify"), auth=stack.a.write,
                                  json={"userId": user, "traits": {"plan": "last"}})
        assert r.status_code == 200, r.text

    async def applied() -> bool:
        for user in users:
            r = await stack.http.get(stack.url("profile", "/v1/profiles/lookup"),
                                     params={"user_id": user}, headers=stack.a.admin)
            if r.status_code != 200:
                return False
        return True

    await eventually(applied)
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.settings.kafka_bootstrap)
    await consumer.start()
    try:
        topic = stack.settings.topic("dlq")
        await consumer._client.force_metadata_update()  # no public way to ask for it
        partitions = [TopicPartition(topic, p)
                      for p in consumer.partitions_for_topic(topic) or ()]
        ends = await consumer.end_offsets(partitions) if partitions else {}
    finally:
        await consumer.stop()
    assert sum(ends.values()) == 0, f"{sum(ends.values())} message(s) dead-lettered"


def test_no_log_line_carries_personal_data_or_keys(stack: Stack) -> None:
    lines = [line for line in stack.logs.lines
             if not any(name in line for name in CLIENT_LOGGERS)]
    assert lines, "nothing was captured: the capture is broken"
    leaked = [(secret, line[:300]) for line in lines for secret in stack.secrets
              if secret in line or secret.lower() in line.lower()]
    assert not leaked, orjson.dumps(leaked[:5]).decode()
