"""Dates read from a profile: `wait.until_field` and the `anniversary` condition (pure).

A value is an ISO date (`1990-02-28`) or date-time (`2026-03-01T10:00:00+00:00`); anything
else is "not a date", which callers turn into a defined path, never an error.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo


def as_datetime(value: Any, tz: ZoneInfo) -> datetime | None:
    """The moment a profile value names (UTC); a bare date is midnight in `tz`. None when
    the value is not a date."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value, time(), tzinfo=tz)
    elif isinstance(value, str) and value:
        try:
            moment = (datetime.combine(date.fromisoformat(value), time(), tzinfo=tz)
                      if len(value) == 10 else datetime.fromisoformat(value))
        except ValueError:
            return None
    else:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.astimezone(UTC)


def _local_date(value: Any, tz: ZoneInfo) -> date | None:
    """The calendar date a value names: a bare date as written, a date-time in `tz`."""
    if isinstance(value, str) and len(value) == 10:
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    moment = as_datetime(value, tz)
    return None if moment is None else moment.astimezone(tz).date()


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def is_anniversary(value: Any, now: datetime, tz: ZoneInfo, days_ahead: Any = 0) -> bool:
    """True when today (in `tz`), plus `days_ahead` days, has the month and day of `value`.

    Feb 29 falls on Feb 28 in years without one. The date itself (year 0 of the anniversary)
    counts only when it is in the past: a sign-up today is not its own anniversary.
    """
    born = _local_date(value, tz)
    if born is None or isinstance(days_ahead, bool):
        return False
    try:
        ahead = int(days_ahead or 0)
    except (TypeError, ValueError):
        return False
    day = (now.astimezone(tz) + timedelta(days=ahead)).date()
    if born >= day:
        return False
    month, dom = born.month, born.day
    if (month, dom) == (2, 29) and not _is_leap(day.year):
        dom = 28
    return (day.month, day.day) == (month, dom)
