"""What the channels and messages APIs answer (OpenAPI: the handlers build these as dicts)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.envelope import JourneyRef


class ChannelOut(BaseModel):
    channel: str
    provider: str
    settings: dict[str, Any]
    credentials: dict[str, str] | None = Field(description="Hints of the stored secrets only.")
    rate_per_second: float | None
    allow_private_targets: bool
    updated_at: datetime


class ChannelList(BaseModel):
    items: list[ChannelOut]


class MessageSummary(BaseModel):
    id: str
    profile_id: str | None
    channel: str
    template: str | None
    template_version: int | None
    status: str
    error: str | None
    journey: JourneyRef | None = Field(description="The journey step that sent it, if any.")
    provider: str | None
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    opened_at: datetime | None
    clicked_at: datetime | None


class MessagePage(BaseModel):
    items: list[MessageSummary]
    limit: int
    offset: int


class MessageOut(MessageSummary):
    idempotency_key: str | None
    recipient: str | None = Field(description="Gone after the profile's erasure.")
    content: dict[str, Any] | None = Field(description="Rendered content; gone after erasure.")
    provider_message_id: str | None
    erased_at: datetime | None
    attempts: int


class EmailStatusReport(BaseModel):
    """A delivery report for one email, signed in the Standard Webhooks format."""

    model_config = ConfigDict(extra="allow")

    message_id: str
    status: Literal["delivered", "bounced", "complained"]
    reason: str | None = None


class TwilioStatus(BaseModel):
    """Twilio's status callback (form-encoded); other fields are ignored."""

    model_config = ConfigDict(extra="allow")

    MessageSid: str
    MessageStatus: str
    ErrorCode: str | None = None
