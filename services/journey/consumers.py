"""Journey's consumer table and background workers."""

from __future__ import annotations

from functools import partial

from services.journey.handlers import handle_profile_changes, handle_profile_events
from services.journey.store import Documents
from services.journey.timers import TimerWorker
from shared.clock import Clock, SystemClock
from shared.contracts import ProfileChange, ProfileEvent
from shared.kafka import ConsumerSpec
from shared.runtime import ServiceRuntime, Worker


def consumers(rt: ServiceRuntime, clock: Clock | None = None, docs: Documents | None = None
              ) -> list[ConsumerSpec]:
    s, clock, docs = rt.settings, clock or SystemClock(), docs or Documents()
    return [
        ConsumerSpec("journey.profile-events", s.topic("profile-events"), ProfileEvent,
                     partial(handle_profile_events, rt, clock, docs)),
        ConsumerSpec("journey.profile-changes", s.topic("profile-changes"), ProfileChange,
                     partial(handle_profile_changes, rt, clock, docs)),
    ]


def workers(rt: ServiceRuntime, clock: Clock | None = None, docs: Documents | None = None
            ) -> list[Worker]:
    return [TimerWorker(rt, clock or SystemClock(), docs or Documents())]
