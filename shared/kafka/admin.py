"""Create the topics (idempotent), each with a finite retention.

Topic records carry personal data (events, traits, addresses; the DLQ keeps the original
bytes), so every topic is created with an explicit `retention.ms` and `segment.ms`: a
record is deleted at most `retention + segment` after it was written, the DLQ included
(its own `TOUCHPOINT_DLQ_RETENTION_HOURS`). Topics that already exist are left as they are
(see docs/reliability.md, "Personal data on topics").
"""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.contracts.registry import TOPICS
from shared.settings import Settings

_TOPIC_EXISTS = 36


def topic_configs(settings: Settings, short_name: str) -> dict[str, str]:
    """The configs a topic is created with: retention and segment roll, in ms."""
    hours = settings.dlq_retention_hours if short_name == "dlq" else settings.topic_retention_hours
    return {"retention.ms": str(int(hours * 3_600_000)),
            "segment.ms": str(int(settings.topic_segment_hours * 3_600_000)),
            "cleanup.policy": "delete"}


async def ensure_topics(settings: Settings, names: list[str] | None = None) -> list[str]:
    """Create every contract topic (or `names`, full names) that does not exist yet."""
    wanted = names or [settings.topic(short) for short in TOPICS]
    short_of = {settings.topic(short): short for short in TOPICS}
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if missing:
            response = await admin.create_topics(
                [NewTopic(n, num_partitions=settings.topic_partitions,
                          replication_factor=settings.topic_replication,
                          topic_configs=topic_configs(settings, short_of.get(n, "")))
                 for n in missing]
            )
            for topic, code, *rest in response.topic_errors:
                if code not in (0, _TOPIC_EXISTS):
                    raise RuntimeError(f"creating {topic} failed: {code} {rest}")
        return wanted
    finally:
        await admin.close()
