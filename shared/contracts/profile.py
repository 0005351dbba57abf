"""`touchpoint.profile-events` and `touchpoint.profile-changes`, produced by profile."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.contracts.envelope import Envelope, encode_fast
from shared.contracts.events import Event


class ProfileSnapshot(BaseModel):
    """A compact copy of the profile, so consumers never need to call back."""

    model_config = ConfigDict(extra="ignore")

    profile_id: str
    user_id: str | None = None
    email: str | None = None
    phone: str | None = None
    timezone: str | None = None
    traits: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    segments: list[str] = Field(default_factory=list)
    push_tokens: list[str] = Field(default_factory=list)
    consent: dict[str, bool] = Field(
        default_factory=dict,
        description="Per channel (`email`, `sms`, `push`) and per topic (`topic:<key>`): "
                    "true subscribed, false unsubscribed; absent means no decision recorded.")
    reachable: dict[str, bool] = Field(
        default_factory=dict,
        description="Per channel: the profile has an address there that is not marked "
                    "undeliverable (hard bounce, invalid token).")
    lifecycle_stage: str | None = None
    rfm_segment: str | None = Field(default=None, description="Champions, Loyal, At Risk, ...")
    codes: dict[str, str] | None = Field(
        default=None, description="Discount codes the customer was sent, by code pool key "
                                  "(`profile.codes.<pool>` in templates); absent when none.")
    workspace_currency: str | None = Field(
        default=None, description="The workspace's currency (profile conventions `currency`), "
                                  "for templates' `money`; absent when none is set.")
    workspace_timezone: str | None = Field(
        default=None, description="The workspace's time zone (profile conventions `timezone`), "
                                  "for templates' `date` when the customer has none; absent "
                                  "when it is UTC.")


class ProfileEvent(Envelope):
    """An accepted event, re-published with its resolved profile. `id` equals the event's id."""

    profile_id: str
    event: Event
    profile: ProfileSnapshot


class ChangeKind(StrEnum):
    created = "created"
    merged = "merged"
    erased = "erased"
    traits_changed = "traits_changed"
    lifecycle_changed = "lifecycle_changed"
    rfm_changed = "rfm_changed"
    segment_entered = "segment_entered"
    segment_exited = "segment_exited"
    consent_changed = "consent_changed"
    address_changed = "address_changed"


class ProfileChange(Envelope):
    """Something about a profile changed. What `data` holds, per kind:

    - `created`: {} (reserved; profile does not emit it).
    - `merged`: `merged_ids`: the profiles that now live under `profile_id`.
    - `erased`: `merged_ids` (may be empty): consumers drop everything they keep about
      `profile_id` and those ids.
    - `traits_changed`: `traits`: the trait names that changed.
    - `lifecycle_changed`, `rfm_changed`: `from`, `to` (stage or RFM segment name; `from` may
      be null).
    - `segment_entered`, `segment_exited`: `segment`: the segment key.
    - `consent_changed`: `channel` (or `topic`), `subscribed` (bool), `source`.
    - `address_changed`: `channel`, `deliverable` (bool), `reason`.
    """

    profile_id: str
    kind: ChangeKind
    data: dict[str, Any] = Field(default_factory=dict)
    occurred_at: datetime
    profile: ProfileSnapshot | None = None

    def details(self) -> ChangeData:
        """`data` typed for this change's kind (see `CHANGE_DATA`)."""
        return change_details(self.kind, self.data)



# `ProfileChange.data` per kind (what `details()` reads it as). Lenient as v1 is: unknown
# keys ignored, every key optional, and a value of the wrong type left out rather than
# refused, so every message accepted as `dict` data parses.

class ChangeData(BaseModel):
    # Numbers as ids are ids: readers used to `str()` them.
    model_config = ConfigDict(extra="ignore", populate_by_name=True, coerce_numbers_to_str=True)


class MergedData(ChangeData):
    merged_ids: list[str] = Field(default_factory=list,
                                  description="Profiles that now live under profile_id.")


class ErasedData(MergedData):
    """Consumers drop everything about profile_id and `merged_ids`."""


class TraitsChangedData(ChangeData):
    traits: list[str] = Field(default_factory=list, description="Trait names that changed.")


class StageChangedData(ChangeData):
    """lifecycle_changed (stages) and rfm_changed (RFM segment names)."""

    from_: str | None = Field(default=None, alias="from")
    to: str | None = None


class SegmentData(ChangeData):
    segment: str | None = None


class ConsentData(ChangeData):
    channel: str | None = None
    topic: str | None = None
    subscribed: bool | None = None
    source: str | None = None


class AddressData(ChangeData):
    channel: str | None = None
    deliverable: bool | None = None
    reason: str | None = None
    address: str | None = None


CHANGE_DATA: dict[ChangeKind, type[ChangeData]] = {
    ChangeKind.created: ChangeData, ChangeKind.merged: MergedData,
    ChangeKind.erased: ErasedData, ChangeKind.traits_changed: TraitsChangedData,
    ChangeKind.lifecycle_changed: StageChangedData, ChangeKind.rfm_changed: StageChangedData,
    ChangeKind.segment_entered: SegmentData, ChangeKind.segment_exited: SegmentData,
    ChangeKind.consent_changed: ConsentData, ChangeKind.address_changed: AddressData,
}


def change_details(kind: ChangeKind, data: dict[str, Any]) -> ChangeData:
    """`data` as its kind's model; a value of the wrong type is left out (v1 never refused
    one: readers skipped it)."""
    model = CHANGE_DATA[kind]
    fields = dict(data)
    while True:
        try:
            return model.model_validate(fields)
        except ValidationError as exc:
            bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
            if not bad & fields.keys():
                raise
            fields = {k: v for k, v in fields.items() if k not in bad}


# Fast writers: the bytes `shared.kafka.codec.encode` gives the models above, written without
# building them (profile writes thousands a second); tests/contract/test_fast_writers.py runs
# every example through both. Fields in the models' order, None fields left out.

def profile_event_json(event_id: str, workspace_id: str, produced_at: str, profile_id: str,
                       event: Event, profile: bytes) -> bytes:
    """A ProfileEvent (schema_version 1); `produced_at` as `json_time` writes it, `profile`
    the snapshot's JSON (its fields in order, None fields left out)."""
    return orjson.dumps({
        "id": event_id, "schema_version": 1, "workspace_id": workspace_id,
        "produced_at": produced_at, "profile_id": profile_id,
        "event": orjson.Fragment(encode_fast(event)), "profile": orjson.Fragment(profile)})


def profile_change_json(change_id: str, workspace_id: str, produced_at: str, profile_id: str,
                        kind: str, data: dict[str, Any], occurred_at: str,
                        profile: bytes | None) -> bytes:
    """A ProfileChange (schema_version 1); `profile` is the snapshot's JSON, or None."""
    message: dict[str, Any] = {
        "id": change_id, "schema_version": 1, "workspace_id": workspace_id,
        "produced_at": produced_at, "profile_id": profile_id, "kind": kind, "data": data,
        "occurred_at": occurred_at}
    if profile is not None:
        message["profile"] = orjson.Fragment(profile)
    return orjson.dumps(message)
