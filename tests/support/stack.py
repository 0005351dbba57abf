"""A benchmark's own broker and database: a Tansu broker, a Postgres server with a scratch
database migrated to head, and the `bench.` topics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from shared.db.migrate import upgrade_all
from shared.kafka.admin import ensure_topics
from shared.settings import Settings
from tests.support.broker import tansu_broker
from tests.support.postgres import postgres_server, scratch_database


@asynccontextmanager
async def bench_stack(**overrides: Any) -> AsyncIterator[Settings]:
    """Settings on that broker and database (prefix `bench.`, 6 partitions, `overrides`)."""
    with tansu_broker() as bootstrap, postgres_server() as server, \
            scratch_database(server) as db_url:
        settings = Settings(database_url=db_url, kafka_bootstrap=bootstrap, topic_prefix="bench.",
                            topic_partitions=6, **overrides)
        await asyncio.to_thread(upgrade_all, db_url)
        await ensure_topics(settings)
        yield settings
