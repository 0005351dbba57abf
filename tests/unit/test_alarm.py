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


async def test_work_due_sooner_ends_the_sleep_at_its_moment() -> None:
    alarms = Alarms()
    with alarms.listening() as alarm:
        alarm.arm()
        sleeping = asyncio.create_task(slept(alarm, 5.0))
        await asyncio.sleep(0.05)
        alarms.due(0.1)  # due 0.1 s from now: the sleep ends then, not at 5 s
        took = await sleeping
    assert 0.14 <= took < 1.0


async def test_work_committed_before_the_sleep_began_is_not_missed() -> None:
    """Announced between arm() (before the worker looked for work) and sleep()."""
    alarms, alarm = Alarms(), Alarm()
    alarms.add(alarm)
    alarm.arm()
    alarms.due()
    assert await slept(alarm, 5.0) < 0.5


async def test_work_due_later_than_the_sleep_changes_nothing() -> None:
    alarms = Alarms()
    with alarms.listening() as alarm:
        alarm.arm()
        sleeping = asyncio.create_task(slept(alarm, 0.2))
        await asyncio.sleep(0.02)
        alarms.due(10.0)
        assert 0.19 <= await sleeping < 1.0


async def test_arm_forgets_what_was_announced_before() -> None:
    """Work announced before the last look for work was found by that look."""
    alarms, alarm = Alarms(), Alarm()
    alarms.add(alarm)
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
