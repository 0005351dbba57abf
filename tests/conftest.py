"""Session fixtures: a real Tansu broker, a scratch Postgres database, unique topic names."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from shared.db.migrate import upgrade_all
from shared.kafka.admin import ensure_topics
from shared.settings import Settings
from tests.support.broker import tansu_broker
from tests.support.postgres import postgres_server, scratch_database
from tests.support.smtp import Inbox, smtp_sink

RUN_ID = uuid.uuid4().hex[:8]
ADMIN_KEY = f"tp_admin_test_{RUN_ID}_0123456789abcdef"
WRITE_KEY = f"tp_write_test_{RUN_ID}_0123456789abcdef"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    with tansu_broker() as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with postgres_server() as server, scratch_database(server) as url:
        upgrade_all(url)
        yield url


@pytest.fixture(scope="session")
def smtp() -> Iterator[tuple[str, Inbox]]:
    with smtp_sink() as sink:
        yield sink


@pytest.fixture(scope="session")
def settings(kafka_bootstrap: str, database_url: str, smtp: tuple[str, Inbox]) -> Settings:
    return Settings(
        env="test", database_url=database_url, kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"test-{RUN_ID}.", topic_partitions=3, smtp_url=smtp[0],
        bootstrap_admin_key=ADMIN_KEY, bootstrap_write_key=WRITE_KEY,
        consumer_fetch_max_wait_ms=10, consumer_session_timeout_ms=6_000,
    )


@pytest.fixture(scope="session")
async def topics(settings: Settings) -> list[str]:
    return await ensure_topics(settings)


@pytest.fixture(scope="session")
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="session")
def write_auth() -> tuple[str, str]:
    """HTTP Basic credentials as Segment SDKs send them: write key, empty password."""
    return (WRITE_KEY, "")


@pytest.fixture
def unique() -> str:
    """A fresh suffix for names a single test owns (topics, groups, keys)."""
    return uuid.uuid4().hex[:10]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Session-scoped async fixtures need every test on the session loop.
    for item in items:
        if isinstance(item, pytest.Function) and asyncio.iscoroutinefunction(item.obj):
            item.add_marker(pytest.mark.asyncio(loop_scope="session"))
