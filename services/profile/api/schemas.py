"""What the profile API answers (OpenAPI); request bodies live next to their routes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.profile.domain.conventions import Conventions


class Paged(BaseModel):
    limit: int
    offset: int


class ConsentEntry(BaseModel):
    subscribed: bool
    source: str
    at: str = Field(description="ISO-8601 time of the decision.")


class AddressState(BaseModel):
    deliverable: bool
    reason: str | None
    at: str


class PushToken(AddressState):
    token: str


class TraitSeen(BaseModel):
    first_seen_at: str
    last_seen_at: str


class ProfileMetrics(BaseModel):
    """Computed numbers; RFM and prediction fields appear once computed."""

    model_config = ConfigDict(extra="allow")

    event_count: int
    order_count: int = Field(description="Orders (`order_events`), each `order_id` once: a "
                             "retried order does not count again; one without an `order_id` "
                             "counts per event.")
    revenue: float = Field(description="gross_revenue - refunded.")
    gross_revenue: float = Field(description="The orders' values, each `order_id` once.")
    refund_count: int = Field(description="Refund events (`refund_events`), each counted.")
    refunded: float
    average_order_value: float | None
    first_order_at: str | None
    last_order_at: str | None
    days_since_last_order: float | None
    mean_interpurchase_days: float | None
    purchase_frequency: float | None
    days_since_last_seen: float | None
    last_open_at: str | None
    last_click_at: str | None
    unsubscribed_channels: list[str]
    nps_score: float | None
    nps_category: str | None


class ProfileSummary(BaseModel):
    id: str
    user_id: str | None
    email: str | None
    phone: str | None
    lifecycle_stage: str | None
    rfm_segment: str | None
    order_count: int
    last_seen_at: str


class ProfilePage(Paged):
    items: list[ProfileSummary]


class ProfileOut(BaseModel):
    id: str
    user_id: str | None
    email: str | None
    phone: str | None
    timezone: str | None
    traits: dict[str, Any]
    trait_seen: dict[str, TraitSeen]
    event_count: int
    first_seen_at: str
    last_seen_at: str
    metrics: ProfileMetrics
    lifecycle_stage: str | None
    rfm_segment: str | None
    segments: list[str]
    consent: dict[str, ConsentEntry] = Field(description="Per channel, or `topic:<name>`.")
    reachable: dict[str, bool] = Field(description="Per channel.")
    addresses: dict[str, AddressState] = Field(description="Per channel.")
    codes: dict[str, str] = Field(description="Discount code per pool.")
    push_tokens: list[PushToken]


class ProfileEvent(BaseModel):
    id: str
    type: str
    name: str | None
    properties: dict[str, Any] | None
    timestamp: str


class ProfileEventPage(Paged):
    items: list[ProfileEvent]


class ProfileMetricsOut(BaseModel):
    profile_id: str
    lifecycle_stage: str | None
    rfm_segment: str | None
    metrics: ProfileMetrics


class Membership(BaseModel):
    segment: str
    entered_at: str


class ProfileSegments(BaseModel):
    profile_id: str
    items: list[Membership]


class ProfileConsent(BaseModel):
    profile_id: str
    consent: dict[str, ConsentEntry]
    addresses: dict[str, AddressState]
    push_tokens: list[PushToken]


class ConsentRecorded(BaseModel):
    profile_id: str
    consent: dict[str, ConsentEntry]


class Erased(BaseModel):
    id: str
    erased: bool


class SegmentOut(BaseModel):
    key: str
    name: str
    description: str
    rule: dict[str, Any] = Field(description="The condition tree, as saved.")
    created_at: str
    updated_at: str
    computed: bool = Field(description="False until membership is fully computed.")
    count: int | None = Field(None, description="Members now (one segment, not in lists).")


class SegmentPage(Paged):
    items: list[SegmentOut]


class SegmentCount(BaseModel):
    key: str
    count: int


class SegmentMember(BaseModel):
    profile_id: str
    entered_at: str


class SegmentMemberPage(Paged):
    items: list[SegmentMember]


class ProfileSettingsOut(BaseModel):
    workspace_id: str = Field(description="The workspace these settings are of (the key's).")
    conventions: Conventions
    model: dict[str, Any] = Field(description="Last churn/LTV model fit ({} before any).")
    recomputed_at: str | None


class ConventionsOut(BaseModel):
    conventions: Conventions


class RecomputeOut(BaseModel):
    """One pass's summary; `skipped` when another replica was doing it."""

    model_config = ConfigDict(extra="allow")

    workspace_id: str
    skipped: bool | None = None
    customers: int | None = None
    model: dict[str, Any] | None = None
    segments_evaluated: int | None = None
