"""Journey's consumer table."""

from __future__ import annotations

from functools import partial

from services.journey.handlers import handle_profile_changes, handle_profile_events
from shared.contracts import ProfileChange, ProfileEvent
from shared.kafka import ConsumerSpec
from shared.runtime import ServiceRuntime


def consumers(rt: ServiceRuntime) -> list[ConsumerSpec]:
    s = rt.settings
    return [
        ConsumerSpec("journey.profile-events", s.topic("profile-events"), ProfileEvent,
                     partial(handle_profile_events, rt)),
        ConsumerSpec("journey.profile-changes", s.topic("profile-changes"), ProfileChange,
                     partial(handle_profile_changes, rt)),
    ]
