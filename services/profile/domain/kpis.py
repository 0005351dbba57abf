"""KPI rollups, the pure part: which facts count, on which local day, for which dimensions,
and what an order is attributed to. The figures read back are in domain/kpi_figures.py."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo

from shared.contracts.delivery import DeliveryStatus

# Delivery outcomes that are counted as such; opens and clicks count once per message.
# held, deferred, expired, suppressed, unknown, queued: never communication.
COUNTED = {DeliveryStatus.sent: "sent", DeliveryStatus.delivered: "delivered",
           DeliveryStatus.bounced: "bounced", DeliveryStatus.complained: "complained",
           DeliveryStatus.unsubscribed: "unsubscribed", DeliveryStatus.failed: "failed"}
TOUCHES = {DeliveryStatus.opened: "open", DeliveryStatus.clicked: "click"}
# The same keyed by the statuses' values, for the consumer's lookups per outcome (an enum
# member's hash is a Python-level call).
COUNTED_VALUES = {s.value: metric for s, metric in COUNTED.items()}
TOUCH_VALUES = {s.value: kind for s, kind in TOUCHES.items()}
DIMENSIONS = ("channel", "journey", "broadcast", "template")
ALL = ("", "")  # the (dim, key) every fact counts under
INTERVALS = ("day", "week", "month")
BITS = 8192  # profile numbers per bitmap row (kpi_bits): 1 KB, stored inline


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_day(ts: datetime, tz: str) -> date:
    """The calendar day of `ts` in the workspace zone."""
    return ts.astimezone(zone(tz)).date()


def interval_start(day: date, interval: str) -> date:
    """The day, the Monday of its ISO week, or the first of its month."""
    if interval == "week":
        return day - timedelta(days=day.weekday())
    if interval == "month":
        return day.replace(day=1)
    return day


def next_start(start: date, interval: str) -> date:
    if interval == "week":
        return start + timedelta(days=7)
    if interval == "month":
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return start + timedelta(days=1)


def whole_intervals(first: date, last: date, interval: str) -> bool:
    """Whether first..last (inclusive) is made of whole intervals."""
    return interval_start(first, interval) == first and \
        next_start(interval_start(last, interval), interval) == last + timedelta(days=1)


def cover(first: date, last: date) -> list[tuple[str, date]]:
    """first..last (inclusive) as few disjoint whole intervals as possible: whole months,
    then whole ISO weeks, then days; (interval, start) each."""
    out: list[tuple[str, date]] = []
    day = first
    while day <= last:
        for interval in ("month", "week", "day"):
            if interval_start(day, interval) == day and \
                    next_start(day, interval) - timedelta(days=1) <= last:
                out.append((interval, day))
                day = next_start(day, interval)
                break
    return out


def dims_of(channel: str | None, journey: str | None, broadcast: str | None,
            template: str | None) -> list[tuple[str, str]]:
    """Every (dimension, key) a message's fact counts under, `ALL` first."""
    out = [ALL]
    for dim, key in (("channel", channel), ("journey", journey), ("broadcast", broadcast),
                     ("template", template)):
        if key:
            out.append((dim, key[:200]))
    return out


def nps_bucket(score: float) -> str:
    return "nps_promoters" if score >= 9 else "nps_passives" if score >= 7 else \
        "nps_detractors"


class Touch(NamedTuple):
    """An open or click of one message by one customer (its last one)."""

    message_id: str
    kind: str  # "open" | "click"
    at: datetime
    channel: str
    journey: str | None
    broadcast: str | None
    template: str | None


def attribute(order_at: datetime, touches: Iterable[Touch], click_window: timedelta,
              open_window: timedelta) -> Touch | None:
    """The message last clicked within `click_window` before the order, else the one last
    opened within `open_window`; on event time (a touch after the order never counts). Ties
    go to the greater message id, so the answer never depends on arrival order."""
    best_click: Touch | None = None
    best_open: Touch | None = None
    for t in touches:
        if t.at > order_at:
            continue
        age = order_at - t.at
        if t.kind == "click" and age <= click_window:
            if best_click is None or (t.at, t.message_id) > (best_click.at, best_click.message_id):
                best_click = t
        elif t.kind == "open" and age <= open_window:
            if best_open is None or (t.at, t.message_id) > (best_open.at, best_open.message_id):
                best_open = t
    return best_click or best_open


_NO_SEGMENT = ("",)  # a fact of no reporting segment counts under "" only


@dataclass
class Rollup:
    """The rollup rows one batch adds, summed in memory: one upsert per table per batch."""

    counts: dict[tuple[str, date, str, str, str, str, str], float] = field(
        default_factory=lambda: defaultdict(float))
    # (workspace, figure, dim, key, segment, local day, profile id) -> facts this batch
    people: dict[tuple[str, str, str, str, str, date, str], int] = field(
        default_factory=lambda: defaultdict(int))

    def count(self, ws: str, day: date, dims: list[tuple[str, str]], segments: Iterable[str],
              metric: str, value: float = 1.0, currency: str = "") -> None:
        counts = self.counts
        for seg in ("", *segments) if segments else _NO_SEGMENT:
            for dim, key in dims:
                counts[(ws, day, dim, key, seg, metric, currency)] += value

    def person(self, ws: str, figure: str, day: date, dims: list[tuple[str, str]],
               segments: Iterable[str], profile_id: str, n: int = 1) -> None:
        """The person counts in the day's bitmap (weeks, months, windows: ORs of days)."""
        people = self.people
        for seg in ("", *segments) if segments else _NO_SEGMENT:
            for dim, key in dims:
                people[(ws, figure, dim, key, seg, day, profile_id)] += n

    def __bool__(self) -> bool:
        return bool(self.counts or self.people)
