"""`touchpoint.send-commands`: journey asks messaging to deliver one message."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.envelope import Envelope, JourneyRef


class Channel(StrEnum):
    email = "email"
    sms = "sms"
    push = "push"
    webhook = "webhook"


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
