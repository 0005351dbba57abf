"""`touchpoint.profile-events` and `touchpoint.profile-changes`, produced by profile."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.envelope import Envelope
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
