"""Every topic, the DLQ included, is created with a finite retention (personal data on
topics is deleted on a schedule documented in docs/reliability.md)."""

from __future__ import annotations

import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from shared.contracts.registry import TOPICS
from shared.kafka.admin import ensure_topics
from shared.settings import Settings

pytestmark = pytest.mark.integration


async def test_topics_are_created_with_finite_retention(settings: Settings) -> None:
    own = settings.model_copy(update={"topic_prefix": f"ret-{uuid.uuid4().hex[:8]}.",
                                      "topic_retention_hours": 72, "dlq_retention_hours": 48})
    names = await ensure_topics(own)
    assert len(names) == len(TOPICS)
    admin = AIOKafkaAdminClient(bootstrap_servers=own.kafka_bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names])
    finally:
        await admin.close()
    # (error_code, error_message, resource_type, resource_name, config_entries)
    configs = {resource[3]: {entry[0]: entry[1] for entry in resource[4]}
               for response in responses for resource in response.resources}
    for name in names:
        hours = 48 if name == own.topic("dlq") else 72
        assert configs[name]["retention.ms"] == str(hours * 3_600_000), name
        assert configs[name]["segment.ms"] == str(24 * 3_600_000), name
        assert configs[name]["cleanup.policy"] == "delete", name
