"""The workspace's contact policy: caps, quiet hours, on-hold behaviour, control group (pure).

One document per workspace (`GET/PUT /v1/policy`). `check` applies it to one send of one
customer, given the sends already handed to messaging; journeys and broadcasts call the
same function, so a broadcast's preview and its sending agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.journey.domain.document import OnHold, QuietHours
from services.journey.domain.ids import bucket
from services.journey.domain.timing import iso_duration, quiet_until
from shared.contracts.send import ChannelName

Channel = ChannelName
CALENDAR_DAY = "calendar_day"
# How far back a `calendar_day` cap must read sends: a local day in any zone (UTC-12 to
# UTC+14) starts less than two days ago.
CALENDAR_LOOKBACK = timedelta(days=2)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PolicyCap(_Strict):
    channel: Channel
    topic: str | None = Field(None, min_length=1, max_length=100,
                              description="Count only sends of templates with this topic.")
    max: int = Field(ge=1, le=10_000)
    per: timedelta | Literal["calendar_day"] = Field(
        description="A rolling window (ISO 8601 duration) or `calendar_day` (the customer's "
                    "local day).")

    @field_validator("per")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        if isinstance(value, timedelta) and value <= timedelta(0):
            raise ValueError("duration must be positive")
        return value

    @property
    def window(self) -> str:
        return self.per if isinstance(self.per, str) else iso_duration(self.per)

    @property
    def lookback(self) -> timedelta:
        return self.per if isinstance(self.per, timedelta) else CALENDAR_LOOKBACK

    @property
    def length(self) -> timedelta:
        """The window's length, to compare caps (a calendar day is a day)."""
        return self.per if isinstance(self.per, timedelta) else timedelta(days=1)


class ContactPolicy(_Strict):
    caps: list[PolicyCap] = Field(default_factory=list, max_length=50)
    quiet_hours: QuietHours | None = None
    priority: list[str] = Field(default_factory=list, max_length=200,
                                description="Journey or `broadcast:<key>` keys, first wins.")
    on_hold: OnHold = Field(default_factory=OnHold)
    max_per_second: int | None = Field(None, ge=1, le=100_000)
    control_group_percent: float = Field(0, ge=0, le=50)

    @model_validator(mode="after")
    def _no_overlap(self) -> ContactPolicy:
        seen: dict[tuple[str, str | None, str], int] = {}
        for index, cap in enumerate(self.caps):
            key = (cap.channel, cap.topic, cap.window)
            if key in seen:
                raise ValueError(f"caps.{index}: same channel, topic and window as "
                                 f"caps.{seen[key]}")
            seen[key] = index
        for index, cap in enumerate(self.caps):
            for other, wider in enumerate(self.caps):
                if (other != index and wider.channel == cap.channel
                        and wider.topic == cap.topic and wider.length > cap.length
                        and wider.max <= cap.max):
                    raise ValueError(f"caps.{index}: can never be reached: caps.{other} allows "
                                     f"{wider.max} over the longer window {wider.window}")
        if len(set(self.priority)) != len(self.priority):
            raise ValueError("priority: a key is listed twice")
        return self

    @property
    def lookback(self) -> timedelta:
        return max((c.lookback for c in self.caps), default=timedelta(0))


@dataclass(frozen=True)
class TemplateMeta:
    """What messaging says a template is."""

    channel: str
    category: str = "marketing"  # marketing | transactional
    topic: str | None = None


@dataclass(frozen=True)
class PastSend:
    channel: str
    topic: str | None
    category: str | None
    at: datetime


@dataclass(frozen=True)
class Outcome:
    """`send`, or why not: `suppressed` (control group, consent), `deferred` (until),
    `held` (on_hold skip) or `expired`; `rule`, `window` and `count` say what caused it."""

    outcome: str
    rule: str | None = None
    reason: str | None = None
    window: str | None = None
    count: int | None = None
    until: datetime | None = None
    expires_at: datetime | None = None

    @property
    def sends(self) -> bool:
        return self.outcome == "send"

    def detail(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "window": self.window, "count": self.count}
        if self.until is not None:
            out["until"] = self.until.isoformat()
        return {k: v for k, v in out.items() if v is not None}


SEND = Outcome("send")


def in_control(salt: str, profile_id: str, percent: float) -> bool:
    """Global control group membership: a hash of the workspace salt and the profile id."""
    return percent > 0 and bucket("control", salt, profile_id) < percent


def consent_refused(profile: dict[str, Any], channel: str, topic: str | None) -> bool:
    consent = profile.get("consent") or {}
    return consent.get(channel) is False or (topic is not None
                                            and consent.get(f"topic:{topic}") is False)


def local_day_start(now: datetime, tz: ZoneInfo) -> datetime:
    local = now.astimezone(tz)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def _next_local_day(now: datetime, tz: ZoneInfo) -> datetime:
    # Aware arithmetic on a zoneinfo datetime is wall-clock: the next local midnight.
    return (local_day_start(now, tz) + timedelta(days=1)).astimezone(ZoneInfo("UTC"))


def check(policy: ContactPolicy, channel: str, meta: TemplateMeta | None, profile: dict[str, Any],
          sends: list[PastSend], now: datetime, tz: ZoneInfo, *, control: bool,
          held_since: datetime | None = None, consent: bool = False,
          sender: str | None = None) -> Outcome:
    """The policy's verdict on one send now. `held_since`: when this send was first held
    (it expires `on_hold.expire_after` later). `consent`: also suppress on a recorded
    unsubscribe (broadcasts; messaging checks consent again for every send). `sender`:
    the journey key or `broadcast:<key>`, for `priority`."""
    category = meta.category if meta else "marketing"
    topic = meta.topic if meta else None
    if category == "transactional" or channel == "webhook":
        return SEND
    if control:
        return Outcome("suppressed", "control_group", "global control group")
    if consent and consent_refused(profile, channel, topic):
        return Outcome("suppressed", "consent", f"unsubscribed from {topic or channel}")
    expires_at = (held_since + policy.on_hold.expire_after
                  if held_since is not None and policy.on_hold.expire_after else None)
    if expires_at is not None and now >= expires_at:
        return Outcome("expired", "on_hold.expire_after",
                       f"held since {held_since.isoformat() if held_since else ''}; expired "
                       f"after {iso_duration(policy.on_hold.expire_after or timedelta(0))}",
                       window=iso_duration(policy.on_hold.expire_after or timedelta(0)))
    blocked = _blocked(policy, channel, meta, sends, now, tz)
    if blocked is None:
        return Outcome("send", expires_at=expires_at)
    if not policy.on_hold.defer:
        return Outcome("held", blocked.rule, blocked.reason, blocked.window, blocked.count,
                       blocked.until)
    until = blocked.until
    if until is not None and policy.priority:
        # Sends held until the same moment compete for the slots it frees: each retries
        # `rank` seconds after it, so the first in `priority` takes the last slot.
        until += timedelta(seconds=rank(policy, sender))
    if until is not None and policy.on_hold.expire_after is not None:
        limit = (held_since or now) + policy.on_hold.expire_after
        until = min(until, limit)
    return Outcome("deferred", blocked.rule, blocked.reason, blocked.window, blocked.count,
                   until, expires_at)


def rank(policy: ContactPolicy, sender: str | None) -> int:
    """A sender's place in `priority` (0 first); unlisted senders come after all."""
    if sender is not None and sender in policy.priority:
        return policy.priority.index(sender)
    return len(policy.priority)


def applicable_caps(policy: ContactPolicy, channel: str, meta: TemplateMeta | None
                    ) -> list[tuple[int, PolicyCap]]:
    """The caps (with their index) that count a send of this template on this channel:
    none for a transactional template or a webhook, which no cap holds."""
    if channel == "webhook" or (meta is not None and meta.category == "transactional"):
        return []
    topic = meta.topic if meta else None
    return [(index, cap) for index, cap in enumerate(policy.caps)
            if cap.channel == channel and (cap.topic is None or cap.topic == topic)]


def cap_since(cap: PolicyCap, now: datetime, tz: ZoneInfo) -> datetime:
    """Sends after this moment (and not after `now`) count toward `cap`."""
    return now - cap.per if isinstance(cap.per, timedelta) else local_day_start(now, tz)


def _blocked(policy: ContactPolicy, channel: str, meta: TemplateMeta | None,
             sends: list[PastSend], now: datetime, tz: ZoneInfo) -> Outcome | None:
    """The first rule that stops a send now (quiet hours, then caps), or None."""
    if policy.quiet_hours is not None:
        q = policy.quiet_hours
        until = quiet_until(now, tz, q.start, q.end)
        if until is not None:
            return Outcome("deferred", "quiet_hours", f"quiet_hours {q.start}-{q.end} in "
                                                      f"{tz.key}", f"{q.start}-{q.end}",
                           until=until)
    worst: Outcome | None = None
    for index, cap in applicable_caps(policy, channel, meta):
        since = cap_since(cap, now, tz)
        # No upper bound at `now`: a send another replica stamped a moment after this
        # one read its clock (then committed while this one waited on the customer's
        # lock) counts, or both would send past the cap.
        counted = sorted(s.at for s in sends if s.channel == channel and s.at > since
                         and s.category != "transactional"
                         and (cap.topic is None or s.topic == cap.topic))
        if len(counted) < cap.max:
            continue
        if isinstance(cap.per, timedelta):
            until = counted[len(counted) - cap.max] + cap.per
        else:
            until = _next_local_day(now, tz)
        what = f"{channel}/{cap.topic}" if cap.topic else channel
        found = Outcome("deferred", f"caps.{index}", f"cap {what}: {len(counted)} sent in "
                                                     f"{cap.window} (max {cap.max})",
                        cap.window, len(counted), until)
        if worst is None or (found.until and worst.until and found.until > worst.until):
            worst = found
    return worst


def local_due(day: datetime, at: str, tz: ZoneInfo, now: datetime) -> datetime:
    """`at` (HH:MM) on `day`'s date in `tz`, as UTC; the next day where that has passed."""
    hour, minute = (int(p) for p in at.split(":"))
    local_day = day.astimezone(tz)
    for offset in range(3):
        candidate = (local_day + timedelta(days=offset)).replace(
            hour=hour, minute=minute, second=0, microsecond=0)
        due = candidate.astimezone(ZoneInfo("UTC"))
        if due > now:
            return due
    return now
