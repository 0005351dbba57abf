"""Profile's consumer table and background workers."""

from __future__ import annotations

from datetime import timedelta
from functools import partial

from services.profile import recompute, tables
from services.profile.handlers import (
    DELIVERY,
    EVENTS,
    handle_delivery_events,
    handle_events,
    handle_poll,
)
from services.profile.settings import ProfileSettings
from shared.contracts import DeliveryEvent, Event
from shared.db.retention import RetentionWorker, inbox_prune
from shared.kafka import ConsumerSpec
from shared.runtime import ServiceRuntime, Worker


def consumers(rt: ServiceRuntime) -> list[ConsumerSpec]:
    s = rt.settings
    # A poll holding both topics' records is applied in one transaction (handle_poll).
    joint = partial(handle_poll, rt)
    return [
        ConsumerSpec(EVENTS, s.topic("events"), Event, partial(handle_events, rt), joint=joint),
        ConsumerSpec(DELIVERY, s.topic("delivery-events"), DeliveryEvent,
                     partial(handle_delivery_events, rt), joint=joint),
    ]


def workers(rt: ServiceRuntime) -> list[Worker]:
    interval = ProfileSettings.from_base(rt.settings).profile_recompute_interval_s
    keep = timedelta(hours=rt.settings.inbox_retention_hours)
    return [recompute.RecomputeSchedule(rt.engine, rt.settings, rt.relay, interval),
            RetentionWorker(rt.engine, {"inbox": inbox_prune(tables.inbox, keep)},
                            rt.settings.retention_interval_s)]
