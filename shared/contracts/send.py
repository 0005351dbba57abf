"""`touchpoint.send-commands`: journey asks messaging to deliver one message."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python

from shared.contracts.envelope import Envelope, JourneyRef


# Every channel (no docstring: it would change the exported JSON Schemas). Adding one:
# docs/architecture.md, "Where to add things".
class Channel(StrEnum):
    email = "email"
    sms = "sms"
    push = "push"
    webhook = "webhook"


# The channels as types, for fields that hold a channel's name (a test checks they match).
ChannelName = Literal["email", "sms", "push", "webhook"]
# Channels that reach a customer at addresses the profile holds (consent, reachability,
# broadcasts); `webhook` reaches a URL the journey names.
ProfileChannel = Literal["email", "sms", "push"]
PROFILE_CHANNELS: tuple[ProfileChannel, ...] = ("email", "sms", "push")
# Where each channel's address lives, in a `Recipient` and in a `ProfileSnapshot`
# (push: the list of device tokens; webhook: only a Recipient has `url`).
ADDRESS_FIELD: dict[str, str] = {"email": "email", "sms": "phone", "push": "push_tokens",
                                 "webhook": "url"}
# How people read each channel (history, console).
CHANNEL_LABEL: dict[str, str] = {"email": "Email", "sms": "SMS", "push": "Push Notification",
                                 "webhook": "Webhook"}


class Recipient(BaseModel):
    model_config = ConfigDict(extra="ignore")

    email: str | None = None
    phone: str | None = None
    push_tokens: list[str] = Field(default_factory=list)
    url: str | None = None


class SendCommand(Envelope):
    """Deliver `template` over `channel`. Messaging sends at most once per `idempotency_key`."""

    profile_id: str
    idempotency_key: str = Field(min_length=8, max_length=200)
    channel: Channel
    template: str = Field(min_length=1, max_length=200)
    to: Recipient
    journey: JourneyRef | None = None
    broadcast: str | None = Field(default=None, max_length=200,
                                  description="The broadcast this send belongs to (no journey).")
    expires_at: datetime | None = Field(
        default=None, description="Not to be delivered after this moment (retries stop here).")
    context: dict[str, Any] = Field(
        default_factory=dict, description="Template data: profile snapshot, event, journey."
    )
    requested_at: datetime


def send_command_json(*, id: str, workspace_id: str, produced_at: datetime, profile_id: str,
                      idempotency_key: str, channel: str, template: str, to: dict[str, Any],
                      journey: dict[str, Any] | None = None, broadcast: str | None = None,
                      expires_at: datetime | None = None, context: dict[str, Any],
                      requested_at: datetime) -> bytes:
    """A SendCommand's bytes (as `shared.kafka.codec.encode` writes the model) without
    building it: building and dumping the model cost more than everything else per send.
    `to` and `journey` hold their models' non-None fields; the values come validated (the
    journey document when saved, the snapshot by its contract)."""
    body: dict[str, Any] = {
        "id": id, "schema_version": 1, "workspace_id": workspace_id, "produced_at": produced_at,
        "profile_id": profile_id, "idempotency_key": idempotency_key, "channel": channel,
        "template": template, "to": to}
    if journey is not None:
        body["journey"] = journey
    if broadcast is not None:
        body["broadcast"] = broadcast
    if expires_at is not None:
        body["expires_at"] = expires_at
    body["context"], body["requested_at"] = context, requested_at
    return orjson.dumps(body, option=orjson.OPT_UTC_Z, default=to_jsonable_python)
