"""Request bodies of the journey API that are not journey documents."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.journey.domain.simulate import SimEvent
from shared.conditions import BoundedTime, Duration
from shared.contracts.profile import ChangeKind, ProfileSnapshot

# `SimulatedEvent._one_kind` as JSON schema: an event or a change; `at` or `after`, not both.
_ONE_KIND: dict[str, Any] = {
    "oneOf": [{"required": [kind], "properties": {kind: {"type": "string"}}}
              for kind in ("event", "change")],
    "anyOf": [{"not": {"required": [name]}} for name in ("at", "after")]
    + [{"properties": {name: {"type": "null"}}} for name in ("at", "after")]}


class SimulatedEvent(BaseModel):
    """One input of a simulation: a track event or a profile change, at a virtual time."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_ONE_KIND)

    event: str | None = Field(None, min_length=1, max_length=200, description="Event name.")
    properties: dict[str, Any] = Field(default_factory=dict)
    change: ChangeKind | None = Field(None, description="A profile change kind instead.")
    data: dict[str, Any] = Field(default_factory=dict, description="The change's data.")
    at: BoundedTime | None = Field(None, description="When; or give `after`.")
    after: Duration | None = Field(None, description="Offset from the simulation's start.")
    id: str | None = Field(None, max_length=200)

    @model_validator(mode="after")
    def _one_kind(self) -> SimulatedEvent:
        if (self.event is None) == (self.change is None):
            raise ValueError("give exactly one of event, change")
        if self.at is not None and self.after is not None:
            raise ValueError("give at most one of at, after")
        return self


class SimulateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"profile": {"profile_id": "p-1", "email": "ada@example.com"},
        "events": [{"event": "Order Completed", "after": "PT1H"}]}]})

    profile: ProfileSnapshot = Field(description="The profile snapshot to run against.")
    events: list[SimulatedEvent] = Field(default_factory=list, max_length=1000)
    start: BoundedTime | None = Field(None, description="Virtual start time; default now.")
    horizon: timedelta = Field(timedelta(days=60), description="Stop after this much virtual "
                                                               "time.")

    @model_validator(mode="after")
    def _bounded(self) -> SimulateRequest:
        if not timedelta(0) < self.horizon <= timedelta(days=3650):
            raise ValueError("horizon must be between 0 and 3650 days")
        return self

    def profile_dict(self) -> dict[str, Any]:
        return self.profile.model_dump(mode="json")

    def timeline(self, start: datetime) -> list[SimEvent]:
        out = []
        for index, e in enumerate(self.events):
            at = e.at or start + (e.after or timedelta(0))
            out.append(SimEvent(id=e.id or f"sim-{index}", at=at, event=e.event,
                                properties=e.properties,
                                change=e.change.value if e.change else None, data=e.data))
        return sorted(out, key=lambda s: s.at)


# What the journey API answers (OpenAPI): the handlers build these shapes as dicts.

class JourneySummary(BaseModel):
    key: str
    name: str
    status: str = Field(description="draft, published, paused or archived.")
    published_version: int | None
    draft: dict[str, Any] | None = Field(description="The draft document, if any.")
    updated_at: datetime


class JourneySaved(JourneySummary):
    warnings: list[str] | None = Field(None, description="Only when some apply.")


class JourneyPublished(JourneySummary):
    existing_members_queued: int | None = Field(None, description="Only when some were.")


class JourneyCounts(BaseModel):
    entries: int
    active: int
    customers: int
    converted: int = Field(description="Customers who reached the goal (holdout excluded).")


class JourneyListItem(JourneySummary):
    stats: JourneyCounts | None = Field(None, description="With `include=stats` only.")
    goal: GoalStats | None = Field(None, description="With `include=goal` only: the `goal` "
                                                     "block of the journey's stats.")


class JourneyList(BaseModel):
    items: list[JourneyListItem]


class VersionRef(BaseModel):
    version: int
    published_at: datetime


class JourneyOut(JourneySummary):
    versions: list[VersionRef]


class JourneyVersionOut(BaseModel):
    key: str
    version: int
    published_at: datetime
    document: dict[str, Any]


class Validated(BaseModel):
    valid: bool
    key: str


class SimulationOut(BaseModel):
    key: str
    ran: str = Field(description="`draft` or `version N`.")
    start: datetime
    trace: list[dict[str, Any]]
    sends: list[dict[str, Any]]
    instances: list[dict[str, Any]]


class GoalArm(BaseModel):
    customers: int
    converted: int
    conversion: float | None
    instances: int
    converted_instances: int


class GoalStats(BaseModel):
    treated: GoalArm
    holdout: GoalArm
    uplift: float | None
    ci95: list[float] | None


class Transition(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str | None = Field(alias="from")
    to: str
    count: int


class StageTime(BaseModel):
    count: int
    mean_s: float | None
    p50_s: float | None
    p90_s: float | None


class JourneyStats(BaseModel):
    key: str
    version: int | None
    entries: int
    customers: int
    stages: dict[str, dict[str, int]] = Field(description="stage -> status -> instances.")
    stage_customers: dict[str, dict[str, int]]
    active_by_step: dict[str, dict[str, int]]
    active_customers_by_step: dict[str, dict[str, int]]
    exits: dict[str, int]
    transitions: list[Transition]
    time_in_stage: dict[str, StageTime]
    sends: dict[str, dict[str, dict[str, int]]] = Field(description="stage -> step -> outcome.")
    goal: GoalStats


class InstanceOut(BaseModel):
    id: int | str
    journey: str
    version: int
    instance_key: str | None
    stage: str
    step: str | None
    status: str
    holdout: bool
    entered_at: datetime
    stage_entered_at: datetime | None
    waiting_until: datetime | None
    ended_at: datetime | None
    exit_reason: str | None
    goal_at: datetime | None


class ProfileJourneys(BaseModel):
    profile_id: str
    items: list[InstanceOut]


class Decision(BaseModel):
    at: datetime
    version: int
    instance_id: int | str | None
    instance_key: str | None
    stage: str | None
    step: str | None
    kind: str
    outcome: str
    reason: str | None
    detail: dict[str, Any] | None


class ProfileTrace(BaseModel):
    profile_id: str
    journey: str
    instances: list[InstanceOut]
    trace: list[Decision]
