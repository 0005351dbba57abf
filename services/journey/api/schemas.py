"""Request bodies of the journey API that are not journey documents."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.journey.domain.simulate import SimEvent
from shared.conditions import BoundedTime, Duration
from shared.contracts.profile import ChangeKind, ProfileSnapshot


class SimulatedEvent(BaseModel):
    """One input of a simulation: a track event or a profile change, at a virtual time."""

    model_config = ConfigDict(extra="forbid")

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
    model_config = ConfigDict(extra="forbid")

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
