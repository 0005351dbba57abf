"""Topic contracts: one versioned pydantic model per topic, with example messages.

Within a version only add optional fields; readers ignore unknown fields
(`extra="ignore"`), so old consumers keep working while producers evolve.
"""

from shared.contracts.delivery import DeliveryEvent, DeliveryStatus
from shared.contracts.envelope import Envelope, JourneyRef, message_key
from shared.contracts.events import Event, EventType
from shared.contracts.profile import ProfileChange, ProfileEvent, ProfileSnapshot
from shared.contracts.registry import TOPICS, TopicContract, contract_for
from shared.contracts.send import Channel, SendCommand

__all__ = [
    "TOPICS",
    "Channel",
    "DeliveryEvent",
    "DeliveryStatus",
    "Envelope",
    "Event",
    "EventType",
    "JourneyRef",
    "ProfileChange",
    "ProfileEvent",
    "ProfileSnapshot",
    "SendCommand",
    "TopicContract",
    "contract_for",
    "message_key",
]
