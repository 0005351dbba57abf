"""Profile's consumer table."""

from __future__ import annotations

from functools import partial

from services.profile.handlers import handle_delivery_events, handle_events
from shared.contracts import DeliveryEvent, Event
from shared.kafka import ConsumerSpec
from shared.runtime import ServiceRuntime


def consumers(rt: ServiceRuntime) -> list[ConsumerSpec]:
    s = rt.settings
    return [
        ConsumerSpec("profile.events", s.topic("events"), Event, partial(handle_events, rt)),
        ConsumerSpec("profile.delivery-events", s.topic("delivery-events"), DeliveryEvent,
                     partial(handle_delivery_events, rt)),
    ]
