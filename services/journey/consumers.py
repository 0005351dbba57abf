"""Journey's consumer table and background workers, and what they share."""

from __future__ import annotations

from functools import partial

from services.journey.broadcasts.worker import BroadcastWorker
from services.journey.handlers import (
    CHANGES,
    EVENTS,
    handle_poll,
    handle_profile_changes,
    handle_profile_events,
)
from services.journey.policy.directory import Directory
from services.journey.publisher import OutboxPublisher
from services.journey.retention import journey_prunes
from services.journey.settings import JourneySettings
from services.journey.store import Documents
from services.journey.timers import TimerWorker
from shared.clock import Clock, SystemClock
from shared.contracts import ProfileChange, ProfileEvent
from shared.db.retention import RetentionWorker
from shared.kafka import ConsumerSpec
from shared.runtime import ServiceRuntime, Worker


class EngineParts:
    """What the consumers and the timer worker of one process share."""

    def __init__(self, clock: Clock | None = None, settings: JourneySettings | None = None
                 ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.docs = Documents()
        self.publisher = OutboxPublisher()
        self.directory = Directory(settings or JourneySettings())


def consumers(rt: ServiceRuntime, parts: EngineParts | None = None) -> list[ConsumerSpec]:
    s, parts = rt.settings, parts or EngineParts()
    # A poll holding both topics' records is applied in one transaction (handle_poll).
    joint = partial(handle_poll, rt, parts.clock, parts.docs, parts.publisher)
    return [
        ConsumerSpec(EVENTS, s.topic("profile-events"), ProfileEvent,
                     partial(handle_profile_events, rt, parts.clock, parts.docs,
                             parts.publisher), joint=joint),
        ConsumerSpec(CHANGES, s.topic("profile-changes"), ProfileChange,
                     partial(handle_profile_changes, rt, parts.clock, parts.docs,
                             parts.publisher), joint=joint),
    ]


def workers(rt: ServiceRuntime, parts: EngineParts | None = None) -> list[Worker]:
    parts = parts or EngineParts()
    publisher = parts.publisher
    publisher.relay = rt.relay  # the runtime drains it on stop
    # Two timer workers: while one waits on Postgres the other computes (SKIP LOCKED keeps
    # them apart, as it does across replicas).
    out: list[Worker] = [TimerWorker(rt, parts.clock, parts.docs, publisher,
                                     directory=parts.directory) for _ in range(2)]
    out.append(BroadcastWorker(rt, parts.clock, parts.docs, parts.directory, publisher))
    # Retention runs on wall-clock time, not the engine's (injectable) clock: it is about
    # how long rows are stored.
    settings = JourneySettings.from_base(rt.settings)
    out.append(RetentionWorker(rt.engine, journey_prunes(settings),
                               settings.retention_interval_s))
    return out
