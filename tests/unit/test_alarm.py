"""A worker's sleep that work announced by its own process ends early (shared/alarm.py)."""

from __future__ import annotations

import asyncio

from shared.alarm import Alarm, Alarms


async def slept(alarm: Alarm, seconds: float, stopping: asyncio.Event | None = None) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    await alarm.sleep(seconds, stopping or asyncio.Event())
    return loop.time() - start


async def test_sleeps_the_time_asked_when_nothing_is_announced() -> None:
    alarm = Alarm()
    alarm.arm()
    assert 0.09 <= await slept(alarm, 0.1) < 0.5


async def announced_while_asleep(seconds: float, after: float, due_in: float) -> float:
    """A listening worker sleeps `seconds`; `after` seconds in, work due in `due_in` s is
    announced. Returns how long the sleep took."""
    alarms = Alarms()
    with alarms.listening() as alarm:
        alarm.arm()
        sleeping = asyncio.create_task(slept(alarm, seconds))
        await asyncio.sleep(after)
        alarms.due(due_in)
        return await sleeping


async def test_work_due_sooner_ends_the_sleep_at_its_moment() -> None:
    # due 0.1 s after the announcement: the sleep ends then, not at 5 s
    assert 0.14 <= await announced_while_asleep(5.0, after=0.05, due_in=0.1) < 1.0


async def test_work_due_later_than_the_sleep_changes_nothing() -> None:
    assert 0.19 <= await announced_while_asleep(0.2, after=0.02, due_in=10.0) < 1.0


async def test_only_work_announced_since_arm_counts() -> None:
    alarms = Alarms()
    with alarms.listening() as alarm:
        # Announced between arm() (before the worker looked for work) and sleep(): not missed.
        alarm.arm()
        alarms.due()
        assert await slept(alarm, 5.0) < 0.5
        # Announced before arm(): the worker's last look for work found it, so it is forgotten.
        alarms.due()
        alarm.arm()
        assert await slept(alarm, 0.1) >= 0.09


async def test_a_removed_alarm_is_not_woken_and_stopping_ends_the_sleep() -> None:
    alarms, alarm, stopping = Alarms(), Alarm(), asyncio.Event()
    alarms.add(alarm)
    alarms.discard(alarm)
    alarm.arm()
    sleeping = asyncio.create_task(slept(alarm, 5.0, stopping))
    await asyncio.sleep(0.02)
    alarms.due()
    await asyncio.sleep(0.05)
    assert not sleeping.done()
    stopping.set()
    assert await sleeping < 1.0
