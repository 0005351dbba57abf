"""The journey document: stages with entry rules and steps. Validated, then immutable."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.journey.domain.conditions import Condition

Key = str


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class EventRule(_Strict):
    event: str | None = Field(None, min_length=1, max_length=200)
    where: Condition | None = None
    condition: Condition | None = Field(None, description="A profile condition.")
    segment_entered: str | None = None
    segment_exited: str | None = None
    lifecycle: str | None = Field(None, description="Lifecycle stage entered.")
    rfm_segment: str | None = Field(None, description="RFM segment entered.")

    @model_validator(mode="after")
    def _one_trigger(self) -> EventRule:
        triggers = [self.event, self.condition, self.segment_entered, self.segment_exited,
                    self.lifecycle, self.rfm_segment]
        if sum(t is not None for t in triggers) != 1:
            raise ValueError("give exactly one of event, condition, segment_entered, "
                             "segment_exited, lifecycle, rfm_segment")
        if self.where is not None and self.event is None:
            raise ValueError("`where` only goes with `event`")
        return self


class Send(_Strict):
    channel: Literal["email", "sms", "push", "webhook"]
    template: str = Field(min_length=1, max_length=200)
    fallback: str | None = Field(None, description="Step to take when no deliverable address.")


class WaitFor(_Strict):
    event: str = Field(min_length=1, max_length=200)
    where: Condition | None = None
    timeout: timedelta
    then: str = Field(description="Step when the event arrives.")
    else_: str = Field(alias="else", description="Step when the timeout passes.")


class WaitUntil(_Strict):
    time: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    weekdays: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] | None = None


class BranchCase(_Strict):
    when: Condition
    next: str


class Branch(_Strict):
    cases: list[BranchCase] = Field(min_length=1)
    default: str | None = None


class SplitPath(_Strict):
    percent: float = Field(gt=0, le=100)
    next: str | None = Field(None, description="Step to go to; none means holdout (exit).")


class Webhook(_Strict):
    url: str = Field(pattern=r"^https?://")
    timeout: timedelta = timedelta(seconds=5)


STEP_KINDS = ("send", "wait", "wait_until", "wait_for", "branch", "split", "update_profile",
              "webhook", "exit")


class Step(_Strict):
    id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_\-]+$")
    next: str | None = None
    send: Send | None = None
    wait: timedelta | None = None
    wait_until: WaitUntil | None = None
    wait_for: WaitFor | None = None
    branch: Branch | None = None
    split: list[SplitPath] | None = None
    update_profile: dict[str, Any] | None = None
    webhook: Webhook | None = None
    exit: bool | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        kinds = [k for k in STEP_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"a step has exactly one of {', '.join(STEP_KINDS)}; got "
                             f"{', '.join(kinds) or 'none'}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in STEP_KINDS if getattr(self, k) is not None)


class Stage(_Strict):
    key: Key = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_\-]+$")
    name: str | None = None
    enter: EventRule
    steps: list[Step] = Field(default_factory=list)


class Goal(_Strict):
    event: str | None = None
    stage: str | None = None
    within: timedelta | None = None


class Cap(_Strict):
    max: int = Field(ge=1)
    per: timedelta


class QuietHours(_Strict):
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")


class JourneyDocument(_Strict):
    key: Key = Field(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    name: str = Field(min_length=1, max_length=200)
    description: str | None = None
    instance_key: str | None = Field(None, pattern=r"^(event|profile)(\.[A-Za-z0-9_\-]+)+$")
    stages: list[Stage] = Field(min_length=1)
    exit_when: list[EventRule] = Field(default_factory=list)
    goal: Goal | None = None
    reentry: Literal["once", "after_exit", "always"] = "after_exit"
    reentry_cooldown: timedelta | None = None
    holdout_percent: float = Field(0, ge=0, le=100)
    frequency_cap: dict[Literal["email", "sms", "push", "webhook"], Cap] = Field(
        default_factory=dict)
    quiet_hours: QuietHours | None = None

    @model_validator(mode="after")
    def _references(self) -> JourneyDocument:
        stage_keys = [s.key for s in self.stages]
        if len(set(stage_keys)) != len(stage_keys):
            raise ValueError("stage keys must be unique")
        for stage in self.stages:
            ids = [s.id for s in stage.steps]
            if len(set(ids)) != len(ids):
                raise ValueError(f"stage {stage.key}: step ids must be unique")
            known = set(ids) | {"end"}
            for step in stage.steps:
                targets = [step.next]
                if step.wait_for:
                    targets += [step.wait_for.then, step.wait_for.else_]
                if step.branch:
                    targets += [c.next for c in step.branch.cases] + [step.branch.default]
                if step.split:
                    targets += [p.next for p in step.split]
                if step.send:
                    targets.append(step.send.fallback)
                for target in targets:
                    if target is not None and target not in known:
                        raise ValueError(f"stage {stage.key}, step {step.id}: unknown step "
                                         f"'{target}'")
        if self.goal and self.goal.stage and self.goal.stage not in stage_keys:
            raise ValueError(f"goal: unknown stage '{self.goal.stage}'")
        return self
