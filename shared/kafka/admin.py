"""Create the topics (idempotent)."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.contracts.registry import TOPICS
from shared.settings import Settings

_TOPIC_EXISTS = 36


async def ensure_topics(settings: Settings, names: list[str] | None = None) -> list[str]:
    """Create every contract topic (or `names`, full names) that does not exist yet."""
    wanted = names or [settings.topic(short) for short in TOPICS]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if missing:
            response = await admin.create_topics(
                [NewTopic(n, num_partitions=settings.topic_partitions,
                          replication_factor=settings.topic_replication)
                 for n in missing]
            )
            for topic, code, *rest in response.topic_errors:
                if code not in (0, _TOPIC_EXISTS):
                    raise RuntimeError(f"creating {topic} failed: {code} {rest}")
        return wanted
    finally:
        await admin.close()
