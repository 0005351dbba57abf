"""`touchpoint.delivery-events`: what happened to a message, produced by messaging."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
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


def delivery_event_json(*, id: str, workspace_id: str, produced_at: datetime, profile_id: str,
                        message_id: str, idempotency_key: str | None = None, status: str,
                        channel: str, template: str | None = None,
                        journey: dict[str, Any] | None = None, broadcast: str | None = None,
                        template_version: int | None = None, test: bool | None = None,
                        codes: dict[str, str] | None = None, reason: str | None = None,
                        url: str | None = None, address: str | None = None,
                        rule: str | None = None, window: str | None = None,
                        count: int | None = None, until: datetime | None = None,
                        occurred_at: datetime) -> bytes:
    """A DeliveryEvent's bytes (as `shared.kafka.codec.encode` writes the model) without
    building it: messaging's send path writes two per email. Every field of the contract,
    None ones left out as the model's dump leaves them out, in the model's field order.
    It validates nothing: the values must be what the model would accept (`journey` a
    JourneyRef's non-None fields, `id` within the envelope's bound, `address` within its
    own); a caller whose values are not known to be valid builds the model."""
    body: dict[str, Any] = {
        "id": id, "schema_version": 1, "workspace_id": workspace_id,
        "produced_at": produced_at, "profile_id": profile_id, "message_id": message_id}
    if idempotency_key is not None:
        body["idempotency_key"] = idempotency_key
    body["status"] = status
    body["channel"] = channel
    # One `if` per field, not a loop over the names: two events per email on the send path.
    if template is not None:
        body["template"] = template
    if journey is not None:
        body["journey"] = journey
    if broadcast is not None:
        body["broadcast"] = broadcast
    if template_version is not None:
        body["template_version"] = template_version
    if test is not None:
        body["test"] = test
    if codes is not None:
        body["codes"] = codes
    if reason is not None:
        body["reason"] = reason
    if url is not None:
        body["url"] = url
    if address is not None:
        body["address"] = address
    if rule is not None:
        body["rule"] = rule
    if window is not None:
        body["window"] = window
    if count is not None:
        body["count"] = count
    if until is not None:
        body["until"] = until
    body["occurred_at"] = occurred_at
    return orjson.dumps(body, option=orjson.OPT_UTC_Z)  # datetimes as pydantic writes them
