"""`touchpoint.events`: accepted tracking calls (Segment spec), as ingest publishes them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
from pydantic import Field, model_validator

from shared.contracts.envelope import Envelope
from shared.contracts.storable import check_storable


class EventType(StrEnum):
    track = "track"
    identify = "identify"
    page = "page"
    screen = "screen"
    group = "group"
    alias = "alias"


class Event(Envelope):
    """One Segment-spec call. `id` is the client's `messageId` (or one ingest made)."""

    type: EventType
    event: str | None = Field(default=None, description="Event name, for track.")
    name: str | None = Field(default=None, description="Page or screen name.")
    category: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    group_id: str | None = None
    previous_id: str | None = Field(default=None, description="For alias: the old id.")
    properties: dict[str, Any] = Field(default_factory=dict)
    traits: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    integrations: dict[str, Any] = Field(default_factory=dict)
    timestamp: datetime = Field(description="When it happened, corrected for client clock skew.")
    original_timestamp: datetime | None = None
    sent_at: datetime | None = None
    received_at: datetime

    @model_validator(mode="after")
    def _identified(self) -> Event:
        if self.type is not EventType.alias and not (self.user_id or self.anonymous_id):
            raise ValueError("user_id or anonymous_id is required")
        if self.type is EventType.alias and not (self.user_id and self.previous_id):
            raise ValueError("alias needs user_id and previous_id")
        if self.type is EventType.track and not self.event:
            raise ValueError("track needs event")
        # Ingest's rule (shared.contracts.storable): what it accepts, every reader can store.
        texts = {"id": self.id, "workspace_id": self.workspace_id, "event": self.event,
                 "name": self.name, "category": self.category, "user_id": self.user_id,
                 "anonymous_id": self.anonymous_id, "group_id": self.group_id,
                 "previous_id": self.previous_id, "properties": self.properties,
                 "traits": self.traits, "context": self.context,
                 "integrations": self.integrations}
        try:  # encoding first is ~4x cheaper than walking every string in Python
            encoded: bytes | None = orjson.dumps(texts)
        except (TypeError, ValueError):  # past orjson's depth or integer range: walk it
            encoded = None
        check_storable(texts, encoded=encoded)
        return self

    @property
    def customer(self) -> str:
        """The id the message is keyed by before identity resolution."""
        return self.user_id or self.anonymous_id or ""
