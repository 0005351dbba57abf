"""The journey document: stages with entry rules and steps. Validated, then immutable.

Validation errors name the path and the reason; pydantic gives the path for shape
errors, and the cross-reference checks below spell the path out in their message.
"""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from services.journey.domain.conditions import Condition
from shared.conditions import Duration, is_stored
from shared.contracts.send import ChannelName
from shared.contracts.storable import Unstorable, check_storable

Key = str
HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"
STEP_ID = r"^[A-Za-z0-9_\-]+$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def _positive(value: timedelta | None) -> timedelta | None:
    if value is not None and value <= timedelta(0):
        raise ValueError("duration must be positive")
    return value


_TRIGGERS = ("event", "condition", "segment_entered", "segment_exited", "lifecycle",
             "rfm_segment")


def _given(name: str, kind: str) -> dict[str, Any]:
    return {"required": [name], "properties": {name: {"type": kind}}}


class EventRule(_Strict):
    """What enters a stage or exits an instance: exactly one trigger."""

    # `_one_trigger` as JSON schema.
    model_config = ConfigDict(json_schema_extra={"allOf": [
        {"oneOf": [_given(t, "object" if t == "condition" else "string") for t in _TRIGGERS]},
        {"anyOf": [{"not": {"required": ["where"]}}, {"properties": {"where": {"type": "null"}}},
                   _given("event", "string")]},
        {"anyOf": [{"not": {"required": ["include_existing"]}},
                   {"properties": {"include_existing": {"enum": [False, None]}}},
                   _given("segment_entered", "string")]}]})

    event: str | None = Field(None, min_length=1, max_length=200)
    where: Condition | None = None
    condition: Condition | None = Field(None, description="A profile condition, checked on "
                                                          "profile changes.")
    segment_entered: str | None = None
    segment_exited: str | None = None
    lifecycle: str | None = Field(None, description="Lifecycle stage entered.")
    rfm_segment: str | None = Field(None, description="RFM segment entered.")
    include_existing: bool | None = Field(
        None, description="With segment_entered on an entry point: the segment's current "
                          "members enter once when the journey is published.")

    @model_validator(mode="after")
    def _one_trigger(self) -> EventRule:
        triggers = [self.event, self.condition, self.segment_entered, self.segment_exited,
                    self.lifecycle, self.rfm_segment]
        if sum(t is not None for t in triggers) != 1:
            raise ValueError("give exactly one of event, condition, segment_entered, "
                             "segment_exited, lifecycle, rfm_segment")
        if self.where is not None and self.event is None:
            raise ValueError("`where` only goes with `event`")
        if self.include_existing and self.segment_entered is None:
            raise ValueError("`include_existing` only goes with `segment_entered`")
        return self


class OnHold(_Strict):
    """What a send the contact policy holds does (domain/policy.py)."""

    defer: bool = Field(True, description="true: retry when the rule allows; false: skip.")
    expire_after: Duration | None = Field(
        None, description="A deferred send older than this is dropped as `expired`.")

    @model_validator(mode="after")
    def _consistent(self) -> OnHold:
        if self.expire_after is not None and self.expire_after <= timedelta(0):
            raise ValueError("on_hold.expire_after: duration must be positive")
        if not self.defer and self.expire_after is not None:
            raise ValueError("on_hold.expire_after: only a deferred send can expire "
                             "(defer is false)")
        return self


class Send(_Strict):
    channel: ChannelName
    template: str = Field(min_length=1, max_length=200)
    on_hold: OnHold | None = Field(None, description="Overrides the contact policy's "
                                                    "on_hold for this step.")
    fallback: str | None = Field(None, description="Step to take when the customer has no "
                                                   "deliverable address on the channel.")


class WaitFor(_Strict):
    event: str = Field(min_length=1, max_length=200)
    where: Condition | None = None
    timeout: Duration
    then: str = Field(description="Step when the event arrives.")
    else_: str = Field(alias="else", description="Step when the timeout passes.")

    _timeout = field_validator("timeout")(_positive)


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class WaitUntil(_Strict):
    time: str = Field(pattern=HHMM, description="Local time of day, HH:MM, in the customer's "
                                                "time zone (UTC when unknown).")
    weekdays: list[Weekday] | None = Field(None, min_length=1)


class WaitField(_Strict):
    """Wait until a date read from the profile (or the stage's event), e.g. the customer's
    `profile.metrics.next_order_expected_at`, shifted by `offset` (may be negative)."""

    until_field: str = Field(pattern=r"^(event|profile)(\.[A-Za-z0-9_\-]+)+$")
    offset: Duration | None = Field(None, description="Added to the date: `-P3D` is three "
                                                       "days before it.")
    missing: str | None = Field(None, description="Step when the field is missing or not a "
                                                  "date; default `end` (the stage's flow "
                                                  "ends).")


class BranchCase(_Strict):
    when: Condition
    next: str


class Branch(_Strict):
    cases: list[BranchCase] = Field(min_length=1)
    default: str | None = Field(None, description="Step when no case holds; else the "
                                                  "following step.")


class SplitPath(_Strict):
    percent: float = Field(gt=0, le=100)
    next: str | None = Field(None, description="Step to go to; none ends the stage's flow.")


class Webhook(_Strict):
    url: str = Field(pattern=r"^https?://", max_length=2000)
    template: str = Field("webhook", min_length=1, max_length=200,
                          description="Messaging template rendered as the request body.")
    timeout: Duration = timedelta(seconds=5)

    _timeout = field_validator("timeout")(_positive)


STEP_KINDS = ("send", "wait", "wait_until", "wait_for", "branch", "split", "update_profile",
              "webhook", "exit")


class Step(_Strict):
    id: str = Field(min_length=1, max_length=100, pattern=STEP_ID)
    next: str | None = None
    send: Send | None = None
    wait: Duration | WaitField | None = None
    wait_until: WaitUntil | None = None
    wait_for: WaitFor | None = None
    branch: Branch | None = None
    split: list[SplitPath] | None = Field(None, min_length=1)
    update_profile: dict[str, Any] | None = Field(None, min_length=1,
                                                  description="Traits to set on the profile.")
    webhook: Webhook | None = None
    exit: bool | None = None

    @field_validator("wait")
    @classmethod
    def _wait_positive(cls, value: timedelta | WaitField | None) -> timedelta | WaitField | None:
        return _positive(value) if isinstance(value, timedelta) else value

    @field_validator("update_profile")
    @classmethod
    def _storable(cls, traits: dict[str, Any] | None,
                  info: ValidationInfo) -> dict[str, Any] | None:
        # They become an identify event's traits: the rule ingest applies to every event.
        if traits is not None and not is_stored(info):
            try:
                check_storable({"traits": traits})
            except Unstorable as exc:
                raise ValueError(str(exc)) from exc
        return traits

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        kinds = [k for k in STEP_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"a step has exactly one of {', '.join(STEP_KINDS)}; got "
                             f"{', '.join(kinds) or 'none'}")
        if self.split is not None and sum(p.percent for p in self.split) > 100:
            raise ValueError("split percents add up to more than 100")
        if self.exit is False:
            raise ValueError("`exit` must be true")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in STEP_KINDS if getattr(self, k) is not None)

    def targets(self) -> list[tuple[str, str]]:
        """(where in the step, step id) for every jump this step can make."""
        out = [("next", self.next)]
        if self.wait_for:
            out += [("wait_for.then", self.wait_for.then), ("wait_for.else", self.wait_for.else_)]
        if self.branch:
            out += [(f"branch.cases.{i}.next", c.next) for i, c in enumerate(self.branch.cases)]
            out.append(("branch.default", self.branch.default))
        if self.split:
            out += [(f"split.{i}.next", p.next) for i, p in enumerate(self.split)]
        if self.send:
            out.append(("send.fallback", self.send.fallback))
        if isinstance(self.wait, WaitField):
            out.append(("wait.missing", self.wait.missing))
        return [(where, target) for where, target in out if target is not None]


class Stage(_Strict):
    key: Key = Field(min_length=1, max_length=100, pattern=STEP_ID)
    name: str | None = None
    enter: EventRule
    entry_point: bool | None = Field(
        None, description="May a customer outside the journey start here? Default: only the "
                          "first stage.")
    steps: list[Step] = Field(default_factory=list)


class Goal(_Strict):
    event: str | None = None
    where: Condition | None = None
    stage: str | None = None
    within: Duration | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Goal:
        if (self.event is None) == (self.stage is None):
            raise ValueError("give exactly one of event, stage")
        if self.within is not None and self.within <= timedelta(0):
            raise ValueError("within: duration must be positive")
        return self


class Cap(_Strict):
    max: int = Field(ge=1)
    per: Duration

    _per = field_validator("per")(_positive)


class QuietHours(_Strict):
    start: str = Field(pattern=HHMM)
    end: str = Field(pattern=HHMM)

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("start and end must differ")
        return self


class JourneyDocument(_Strict):
    key: Key = Field(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    name: str = Field(min_length=1, max_length=200)
    description: str | None = None
    instance_key: str | None = Field(None, pattern=r"^(event|profile)(\.[A-Za-z0-9_\-]+)+$")
    stages: list[Stage] = Field(min_length=1, max_length=50)
    exit_when: list[EventRule] = Field(default_factory=list)
    goal: Goal | None = None
    reentry: Literal["once", "after_exit", "always"] = "after_exit"
    reentry_cooldown: Duration | None = None
    holdout_percent: float = Field(0, ge=0, le=100)
    frequency_cap: dict[ChannelName, Cap] = Field(
        default_factory=dict)
    quiet_hours: QuietHours | None = None
    idle_timeout: Duration = Field(
        timedelta(days=30), description="A customer whose stage flow finished waits this long "
                                        "for a later stage's rule, then completes.")

    _idle = field_validator("idle_timeout")(_positive)

    @model_validator(mode="after")
    def _references(self) -> JourneyDocument:
        seen_stages: set[str] = set()
        for s_index, stage in enumerate(self.stages):
            if stage.key in seen_stages:
                raise ValueError(f"stages.{s_index}.key: duplicate stage key '{stage.key}'")
            seen_stages.add(stage.key)
            ids: set[str] = set()
            for index, step in enumerate(stage.steps):
                if step.id in ids or step.id == "end":
                    raise ValueError(f"stages.{s_index}.steps.{index}.id: duplicate or reserved "
                                     f"step id '{step.id}'")
                ids.add(step.id)
            for index, step in enumerate(stage.steps):
                for where, target in step.targets():
                    if target != "end" and target not in ids:
                        raise ValueError(f"stages.{s_index}.steps.{index}.{where}: unknown step "
                                         f"'{target}' in stage '{stage.key}'")
        if self.goal and self.goal.stage and self.goal.stage not in seen_stages:
            raise ValueError(f"goal.stage: unknown stage '{self.goal.stage}'")
        return self

    # Lookups the engine makes per event; documents are immutable, so computed once.
    @cached_property
    def _stage_index(self) -> dict[str, int]:
        return {s.key: i for i, s in enumerate(self.stages)}

    def stage(self, key: str) -> Stage | None:
        index = self._stage_index.get(key)
        return None if index is None else self.stages[index]

    def stage_index(self, key: str) -> int:
        return self._stage_index[key]

    @cached_property
    def _entry_points(self) -> list[Stage]:
        return [s for i, s in enumerate(self.stages)
                if s.entry_point or (s.entry_point is None and i == 0)]

    def entry_points(self) -> list[Stage]:
        """Stages a customer outside the journey may start in."""
        return self._entry_points

    @cached_property
    def entry_events(self) -> frozenset[str] | None:
        """Event names that can start an instance; None when a non-event rule can too
        (the engine skips the journey for other events without evaluating anything)."""
        names = [s.enter.event for s in self._entry_points]
        return None if None in names else frozenset(n for n in names if n is not None)
