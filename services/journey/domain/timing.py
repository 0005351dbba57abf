"""Local time for customers: time zones, quiet hours, `wait_until`. Pure, clock injected."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def zone(name: str | None) -> ZoneInfo:
    """The customer's zone; UTC when unknown or invalid (never an error)."""
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo("UTC")


def _hhmm(text: str) -> time:
    hour, minute = text.split(":")
    return time(int(hour), int(minute))


def _at(day: datetime, clock: time, tz: ZoneInfo) -> datetime:
    """That local wall-clock time on `day`'s date, as UTC (DST gaps roll forward)."""
    local = datetime.combine(day.date(), clock, tzinfo=tz)
    # A wall time inside a spring-forward gap does not exist; round trip through UTC fixes it.
    return local.astimezone(UTC)


def quiet_until(now: datetime, tz: ZoneInfo, start: str, end: str) -> datetime | None:
    """When the quiet window `now` falls in ends (UTC), or None when it is not quiet."""
    local = now.astimezone(tz)
    begin, finish = _hhmm(start), _hhmm(end)
    t = local.time().replace(tzinfo=None)
    if begin < finish:  # e.g. 12:00-14:00, same day
        return _at(local, finish, tz) if begin <= t < finish else None
    if t >= begin:  # e.g. 21:00-09:00, evening part: ends tomorrow morning
        return _at(local + timedelta(days=1), finish, tz)
    if t < finish:  # early-morning part: ends this morning
        return _at(local, finish, tz)
    return None


def next_local_time(now: datetime, tz: ZoneInfo, at: str,
                    weekdays: Sequence[str] | None = None) -> datetime:
    """The first moment after `now` whose local time is `at` on one of `weekdays` (UTC)."""
    local = now.astimezone(tz)
    clock = _hhmm(at)
    for days in range(8):
        candidate = _at(local + timedelta(days=days), clock, tz)
        day_name = WEEKDAYS[(local + timedelta(days=days)).weekday()]
        if candidate > now and (not weekdays or day_name in weekdays):
            return candidate
    raise AssertionError("a weekday set always matches within 8 days")


def iso_duration(value: timedelta) -> str:
    """ISO 8601, as documents write durations: P7D, PT2H30M, PT1.5S."""
    seconds = value.total_seconds()
    days, rest = divmod(int(seconds), 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    fraction = seconds - int(seconds)
    out = f"P{days}D" if days else "P"
    clock = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    if secs or fraction:
        clock += f"{secs + fraction:g}S"
    return out + (f"T{clock}" if clock else "") if out + clock != "P" else "PT0S"
