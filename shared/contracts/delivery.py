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
    # Added in this round (readers that predate them skip them, see shared/kafka/consumer.py):
    unknown = "unknown"  # messaging: a provider call was in flight at a crash; outcome unknown
    held = "held"  # journey: the contact policy held the send (cap, quiet hours)
    deferred = "deferred"  # journey: held and rescheduled for a later slot
    expired = "expired"  # journey: a deferred send passed its `expires_at` and was dropped
    suppressed = "suppressed"  # journey: not sent (control group, no consent, undeliverable)


class DeliveryEvent(Envelope):
    """One status change of one message. `id` is unique per (message, status, occurrence)."""

    profile_id: str
    message_id: str
    idempotency_key: str | None = None
    status: DeliveryStatus
    channel: Channel
    template: str | None = None
    journey: JourneyRef | None = None
    broadcast: str | None = Field(default=None, description="The broadcast it belongs to.")
    template_version: int | None = Field(default=None, description="Template version rendered.")
    test: bool | None = Field(default=None, description="True for a test send (not in KPIs).")
    codes: dict[str, str] | None = Field(
        default=None, description="On sent: discount codes handed out, by code pool key.")
    reason: str | None = Field(default=None, description="Why it failed, bounced, ...")
    url: str | None = Field(default=None, description="For clicked: the target URL.")
    address: str | None = Field(
        default=None, max_length=4096,
        description="The email address, phone number, push token or subscription concerned: "
                    "on bounced, the undeliverable one, so profile marks that one address.")
    # Added with the contact policy (journey's held/deferred/expired/suppressed outcomes):
    rule: str | None = Field(
        default=None, description="The rule that held the send: `caps.0`, `quiet_hours`, "
                                  "`control_group`, `consent`, `on_hold.expire_after`, ...")
    window: str | None = Field(default=None, description="The rule's window: `P1D`, "
                                                         "`calendar_day`, `21:00-09:00`.")
    count: int | None = Field(default=None, description="Sends counted in the window.")
    until: datetime | None = Field(default=None, description="On deferred: when it is "
                                                             "tried again.")
    occurred_at: datetime
