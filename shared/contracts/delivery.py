"""`touchpoint.delivery-events`: what happened to a message, produced by messaging."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from shared.contracts.envelope import Envelope, JourneyRef
from shared.contracts.send import Channel


class DeliveryStatus(StrEnum):
    queued = "queued"
    sent = "sent"
    delivered = "delivered"
    failed = "failed"
    bounced = "bounced"
    opened = "opened"
    clicked = "clicked"
    unsubscribed = "unsubscribed"
    complained = "complained"


class DeliveryEvent(Envelope):
    """One status change of one message. `id` is unique per (message, status, occurrence)."""

    profile_id: str
    message_id: str
    idempotency_key: str | None = None
    status: DeliveryStatus
    channel: Channel
    template: str | None = None
    journey: JourneyRef | None = None
    reason: str | None = Field(default=None, description="Why it failed, bounced, ...")
    url: str | None = Field(default=None, description="For clicked: the target URL.")
    address: str | None = Field(
        default=None, max_length=4096,
        description="The email address, phone number, push token or subscription concerned: "
                    "on bounced, the undeliverable one, so profile marks that one address.")
    occurred_at: datetime
