"""The consumer's fetch wait: longer after 2 s without records, short again with the first."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from shared.kafka import fetch_wait
from shared.kafka.fetch_wait import FetchWait
from shared.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(fetch_wait.time, "monotonic", c)
    return c


def consumer() -> SimpleNamespace:
    return SimpleNamespace(_fetcher=SimpleNamespace(_fetch_max_wait_ms=20))


def test_idle_lengthens_the_wait_and_records_shorten_it(clock: Clock) -> None:
    c = consumer()
    wait = FetchWait(c, Settings(consumer_fetch_max_wait_ms=20, consumer_fetch_idle_wait_ms=100))
    clock.now += 1.9
    wait.polled(False)
    assert c._fetcher._fetch_max_wait_ms == 20  # not idle long enough
    clock.now += 0.2
    wait.polled(False)
    assert c._fetcher._fetch_max_wait_ms == 100 and wait.idle
    wait.polled(True)
    assert c._fetcher._fetch_max_wait_ms == 20 and not wait.idle
    clock.now += 1.0
    wait.polled(False)
    assert c._fetcher._fetch_max_wait_ms == 20  # 1 s since the last records


def test_off_when_the_idle_wait_is_not_longer(clock: Clock) -> None:
    c = consumer()
    wait = FetchWait(c, Settings(consumer_fetch_max_wait_ms=20, consumer_fetch_idle_wait_ms=0))
    clock.now += 10
    wait.polled(False)
    assert not wait.enabled and c._fetcher._fetch_max_wait_ms == 20


def test_another_aiokafka_without_the_attribute_keeps_a_fixed_wait(clock: Clock) -> None:
    wait = FetchWait(SimpleNamespace(), Settings())  # type: ignore[arg-type]
    clock.now += 10
    wait.polled(False)
    assert not wait.enabled
