"""What the ingest API answers and the bodies it documents (OpenAPI; the fast path parses)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.http.contracts import FieldError

_TRACK_EXAMPLES: list[Any] = [{
    "userId": "u-42", "event": "Order Completed",
    "properties": {"order_id": "o-1001", "revenue": 59.9, "currency": "EUR"},
    "context": {"ip": "203.0.113.7"}, "timestamp": "2026-01-15T10:30:00Z",
    "messageId": "6f1d0c8e-2d7b-4b7e-9d52-0d2d1c7e9a11"}]


# A call's own fields. TrackingCall names this base last so that OpenAPI lists them first
# (pydantic orders fields base by base, from the last base to the first).
# Ids may be numbers: SDKs of loosely typed languages send `"userId": 42`, read as its
# decimal string (`Call`'s coerce_numbers_to_str), as Segment does. Names never are.
_Id = Annotated[str, Field(max_length=255)] | float
_NUMBER = " A number is read as its decimal string."


class _CallFields(BaseModel):
    messageId: Annotated[str, Field(max_length=200)] | float | None = Field(
        None, description="Idempotency key (dedupe window 48 h)." + _NUMBER)
    userId: _Id | None = Field(None, description="The customer's id in your system." + _NUMBER)
    anonymousId: _Id | None = Field(None, description="A device or visit id." + _NUMBER)
    event: str | None = Field(None, max_length=200, description="`track`: the event's name.")
    name: str | None = Field(None, max_length=200, description="`page`/`screen`: its name.")
    category: str | None = Field(None, max_length=200)
    groupId: _Id | None = Field(None, description="`group`: the group." + _NUMBER)
    previousId: _Id | None = Field(None, description="`alias`: the old id." + _NUMBER)
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    timestamp: datetime | None = None
    originalTimestamp: datetime | None = None


class BatchWide(BaseModel):
    """What a call carries and a batch may also set once, at its top level (context,
    integrations and sentAt then apply to each of its calls)."""

    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    sentAt: datetime | None = Field(None, description="Client clock, for skew correction.")
    writeKey: str | None = Field(None, description="The write key, when not sent as Basic.")


class TrackingCall(BatchWide, _CallFields):
    """One Segment-spec call: ids, names, properties or traits, context, times."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": _TRACK_EXAMPLES})


# `Call.problems` (services/ingest/domain/calls.py) as JSON schema: which ids and names
# each call type needs. An id or a name is there when it holds more than whitespace.
_THERE = {"anyOf": [{"type": "string", "pattern": r"\S"}, {"type": "number"}]}


def _needs(*names: str) -> dict[str, Any]:
    return {"required": list(names), "properties": {n: _THERE for n in names}}


_SOMEONE = {"anyOf": [_needs("userId"), _needs("anonymousId")]}
NEEDS: dict[str, dict[str, Any]] = {
    "track": {"allOf": [_SOMEONE, _needs("event")]},
    "identify": _SOMEONE, "page": _SOMEONE, "screen": _SOMEONE,
    "group": {"allOf": [_SOMEONE, _needs("groupId")]},
    "alias": {"allOf": [_needs("userId", "previousId")]},
}
CALL_TYPES = tuple(NEEDS)


_EXAMPLES: dict[str, dict[str, Any]] = {
    "identify": {"userId": "u-42", "traits": {"email": "ada@example.com"}},
    "page": {"anonymousId": "anon-7", "name": "Pricing"},
    "screen": {"userId": "u-42", "name": "Cart"},
    "group": {"userId": "u-42", "groupId": "acme"},
    "alias": {"userId": "u-42", "previousId": "anon-7"},
}


def _call_model(call_type: str) -> type[TrackingCall]:
    title = f"{call_type.capitalize()}Call"
    extra: dict[str, Any] = {**NEEDS[call_type], "examples": [_EXAMPLES[call_type]] if
                             call_type in _EXAMPLES else _TRACK_EXAMPLES}
    return type(title, (TrackingCall,), {
        "__doc__": f"A Segment-spec `{call_type}` call: what it needs, and every field.",
        "model_config": ConfigDict(title=title, json_schema_extra=extra)})


# The body each single-call route documents (the fast path parses and checks it).
CALL_MODELS: dict[str, type[TrackingCall]] = {t: _call_model(t) for t in CALL_TYPES}


class BatchCall(TrackingCall):
    """A call inside a batch: its `type` says which, and what it needs."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"allOf": [{"properties": {"type": {"const": t}}}, needs]} for t, needs in NEEDS.items()
    ]})

    type: Literal["track", "identify", "page", "screen", "group", "alias"]


class TrackingBatch(BatchWide):
    """Calls sent together; top-level context, integrations and sentAt apply to each."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "batch": [{"type": "identify", "userId": "u-42", "traits": {"email": "ada@example.com"}},
                  {"type": "track", "userId": "u-42", "event": "Signed Up"}],
        "sentAt": "2026-01-15T10:30:01Z"}]})

    batch: list[BatchCall] = Field(min_length=1)


class Accepted(BaseModel):
    """Segment's answer, which SDKs check."""

    success: Literal[True]


class RejectedCall(BaseModel):
    index: int
    status: int = Field(description="400, or 413 for a call over 32 KB.")
    errors: list[FieldError]


class BatchAccepted(Accepted):
    accepted: int = Field(description="Calls accepted, duplicates included.")
    duplicates: int = Field(description="Of those, calls accepted earlier (same messageId).")
    rejected: list[RejectedCall] | None = Field(None, description="Only when some were.")


class NewWriteKey(BaseModel):
    model_config = ConfigDict(extra="forbid",
                              json_schema_extra={"examples": [{"name": "storefront"}]})

    name: str = Field(min_length=1, max_length=200, description="What the key is for.")


class WriteKeyOut(BaseModel):
    id: str = Field(description="Public id: a prefix of the key's SHA-256.")
    kind: str
    name: str
    workspace_id: str
    created_at: datetime
    revoked_at: datetime | None


class CreatedWriteKey(WriteKeyOut):
    key: str = Field(description="The key itself: shown once, never again.")


class WriteKeyPage(BaseModel):
    items: list[WriteKeyOut]
    limit: int
    offset: int
