"""Journey's consumer table and background workers."""

from __future__ import annotations

from functools import partial

from services.journey.handlers import handle_profile_changes, handle_profile_events
from services.journey.store import Documents
from services.journey.timers import TimerWorker
from shared.clock import Clock
from shared.contracts import ProfileChange, ProfileEvent
from shared.kafka import ConsumerSpec
from shared.runtime import ServiceRuntime, Worker


def consumers(clock: Clock, docs: Documents, rt: ServiceRuntime) -> list[ConsumerSpec]:
    s = rt.settings
    return [
        ConsumerSpec("journey.profile-events", s.topic("profile-events"), ProfileEvent,
                     partial(handle_profile_events, rt, clock, docs)),
        ConsumerSpec("journey.profile-changes", s.topic("profile-changes"), ProfileChange,
                     partial(handle_profile_changes, rt, clock, docs)),
    ]


def workers(clock: Clock, docs: Documents, rt: ServiceRuntime) -> list[Worker]:
    return [TimerWorker(rt, clock, docs)]
