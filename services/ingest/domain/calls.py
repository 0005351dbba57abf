"""Segment-spec calls as clients send them, and how they become `Event`s (pure)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from shared.contracts.events import Event
from shared.contracts.storable import plausible_event_time

# One Python validator only (`Time`'s type check): this model runs once per event on the
# hot path, so every other rule is one pydantic-core does natively. What it cannot say (an
# empty id is no id, a null object is an empty one) is read that way by `problems` and
# `event_document`.
Id = Annotated[str, Field(max_length=255)]
Name = Annotated[str, Field(max_length=200, strict=True)]  # names are never numbers
Object = dict[str, Any] | None  # some SDKs send `"properties": null`: it means none


def _iso_only(value: Any) -> Any:
    """Times are ISO-8601 strings (Segment's spec and our OpenAPI): pydantic would read a
    number as Unix seconds or milliseconds by its size, which no client can rely on."""
    if value is None or isinstance(value, str | datetime):
        return value
    raise ValueError("expected an ISO-8601 date-time string")


# The one Python validator of the model: a type check, and only on the time fields sent.
Time = Annotated[datetime, BeforeValidator(_iso_only)]


class Call(BaseModel):
    """One call of the Segment HTTP Tracking API (camelCase, unknown fields ignored)."""

    # Numeric ids are strings to Segment: SDKs of loosely typed languages send `"userId": 42`.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True,
                              coerce_numbers_to_str=True)

    type: Literal["track", "identify", "page", "screen", "group", "alias"]
    # Postgres text cannot hold NUL, and the dedupe store keeps the messageId.
    messageId: Annotated[str, Field(max_length=200, pattern=r"^[^\x00]*$")] | None = None
    userId: Id | None = None
    anonymousId: Id | None = None
    event: Name | None = None
    name: Name | None = None
    category: Name | None = None
    groupId: Id | None = None
    previousId: Id | None = None
    properties: Object = None
    traits: Object = None
    context: Object = None
    integrations: Object = None
    timestamp: Time | None = None
    originalTimestamp: Time | None = None
    sentAt: Time | None = None
    # Read from the body only without Basic auth, but held to its type either way: a call
    # the OpenAPI calls invalid is refused whichever way the key came.
    writeKey: Annotated[str, Field(strict=True)] | None = None

    def problems(self) -> list[dict[str, str]]:
        """The spec's rules beyond types: which ids and names each call needs."""
        errors = []
        if self.type == "alias":
            if not self.userId:
                errors.append({"field": "userId", "message": "alias requires userId"})
            if not self.previousId:
                errors.append({"field": "previousId", "message": "alias requires previousId"})
        elif not (self.userId or self.anonymousId):
            errors.append({"field": "userId", "message": "userId or anonymousId is required"})
        if self.type == "track" and not self.event:
            errors.append({"field": "event", "message": "track requires event"})
        if self.type == "group" and not self.groupId:
            errors.append({"field": "groupId", "message": "group requires groupId"})
        return errors


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def corrected_timestamp(
    timestamp: datetime | None, sent_at: datetime | None, received_at: datetime
) -> datetime:
    """Segment's skew correction: timestamp + (receivedAt - sentAt) when the client sent sentAt.

    A result before 1970 or more than 24 h after receivedAt (or past the representable
    range) is a broken clock: the event happened when it was received (the caller keeps
    the client's value as `originalTimestamp`).
    """
    timestamp, sent_at = _aware(timestamp), _aware(sent_at)
    if timestamp is None:
        return received_at
    try:
        corrected = timestamp if sent_at is None else timestamp + (received_at - sent_at)
    except OverflowError:
        return received_at
    return plausible_event_time(corrected, received_at)


def event_document(call: Call, *, workspace_id: str, received_at: datetime,
                   batch_sent_at: datetime | None = None) -> dict[str, Any]:
    """The `Event` (touchpoint.events v1) for `call`, as the dict its JSON encodes.

    Built directly rather than through the `Event` model: this runs once per event on the
    hot path, `Call` has already checked everything `Event` would, and a unit test holds
    the two to the same output. None values are left out, as `encode` does.
    """
    original = call.timestamp or call.originalTimestamp
    sent_at = call.sentAt or batch_sent_at
    document: dict[str, Any] = {
        "id": call.messageId or f"ingest-{uuid.uuid4()}",
        "schema_version": 1,
        "workspace_id": workspace_id,
        "produced_at": received_at,
        "type": call.type,
        "properties": call.properties or {},
        "traits": call.traits or {},
        "context": call.context or {},
        "integrations": call.integrations or {},
        "timestamp": corrected_timestamp(original, sent_at, received_at),
        "received_at": received_at,
    }
    # Empty strings count as absent (`"userId": ""` next to an anonymousId is common).
    optional = (("event", call.event), ("name", call.name), ("category", call.category),
                ("user_id", call.userId), ("anonymous_id", call.anonymousId),
                ("group_id", call.groupId), ("previous_id", call.previousId),
                ("original_timestamp", _aware(original)), ("sent_at", _aware(sent_at)))
    for name, value in optional:
        if value:
            document[name] = value
    return document


def to_event(call: Call, *, workspace_id: str, received_at: datetime,
             batch_sent_at: datetime | None = None) -> Event:
    """The same event as a validated `Event` model (for code off the hot path)."""
    return Event.model_validate(event_document(call, workspace_id=workspace_id,
                                               received_at=received_at,
                                               batch_sent_at=batch_sent_at))
