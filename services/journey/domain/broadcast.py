"""Broadcasts: a one-off send of a template to a segment or a condition (pure).

`classify` decides one recipient's fate now (the sending worker); the preview calls its
`judge` once per class of alike members (broadcasts/preview.py), so what is sent equals the
preview minus what changed in between.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from services.journey.domain.conditions import Condition, evaluate
from services.journey.domain.document import HHMM, OnHold
from services.journey.domain.guards import reachable
from services.journey.domain.policy import (
    ContactPolicy,
    Outcome,
    PastSend,
    TemplateMeta,
    check,
)
from shared.contracts.send import ProfileChannel

KEY = r"^[a-z0-9][a-z0-9_\-]*$"
STATES = ("draft", "scheduled", "sending", "sent", "cancelled")


class BroadcastDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, max_length=200)
    segment: str | None = Field(None, min_length=1, max_length=200)
    condition: Condition | None = None
    template: str = Field(min_length=1, max_length=200)
    channel: ProfileChannel = "email"
    send_at: AwareDatetime | None = None
    local_time: str | None = Field(None, pattern=HHMM, description="HH:MM in each customer's "
                                                                  "zone, on send_at's date.")
    throttle_per_second: int | None = Field(None, ge=1, le=100_000)
    on_hold: OnHold | None = Field(None, description="Overrides the policy's on_hold.")

    @model_validator(mode="after")
    def _one_audience(self) -> BroadcastDocument:
        if (self.segment is None) == (self.condition is None):
            raise ValueError("segment: give exactly one of segment, condition")
        return self

    def member(self, profile: dict[str, Any], now: datetime) -> bool:
        if self.segment is not None:
            return self.segment in (profile.get("segments") or [])
        assert self.condition is not None
        return evaluate(self.condition, {"profile": profile}, now)


# Preview reasons, by the rule that stopped a send.
def reason_of(outcome: Outcome) -> str:
    rule = outcome.rule or outcome.outcome
    if rule.startswith("caps."):
        return "cap"
    return {"consent": "no_consent", "on_hold.expire_after": "expired"}.get(rule, rule)


def classify(doc: BroadcastDocument, policy: ContactPolicy | None, meta: TemplateMeta | None,
             profile: dict[str, Any], past: list[PastSend], now: datetime, tz: ZoneInfo, *,
             control: bool, held_since: datetime | None = None, key: str | None = None
             ) -> Outcome:
    """One recipient now: left the audience, undeliverable, then the contact policy."""
    if not doc.member(profile, now):
        return Outcome("suppressed", "left_audience", "no longer in the audience")
    return judge(doc, policy, meta, profile, past, now, tz, control=control,
                 held_since=held_since, key=key)


def judge(doc: BroadcastDocument, policy: ContactPolicy | None, meta: TemplateMeta | None,
          profile: dict[str, Any], past: list[PastSend], now: datetime, tz: ZoneInfo, *,
          control: bool, held_since: datetime | None = None, key: str | None = None
          ) -> Outcome:
    """A member of the audience now: undeliverable, then the contact policy."""
    if not reachable(profile, doc.channel):
        return Outcome("suppressed", "undeliverable",
                       f"unreachable: no deliverable {doc.channel} address")
    rules = policy or ContactPolicy()
    if doc.on_hold is not None:
        rules = rules.model_copy(update={"on_hold": doc.on_hold})
    return check(rules, doc.channel, meta, profile, past, now, tz, control=control,
                 held_since=held_since, consent=True,
                 sender=f"broadcast:{key}" if key else None)


def allowed(tick_at: datetime | None, now: datetime, rate: float) -> int:
    """How many sends a pace of `rate` per second allows now (at most one second's worth)."""
    start = max(tick_at or now - timedelta(seconds=1), now - timedelta(seconds=1))
    return max(0, int((now - start).total_seconds() * rate + 1e-9))


def advanced(tick_at: datetime | None, now: datetime, rate: float, used: int) -> datetime:
    """The pacing clock after `used` sends."""
    start = max(tick_at or now - timedelta(seconds=1), now - timedelta(seconds=1))
    return start + timedelta(seconds=used / rate)
