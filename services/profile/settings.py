"""Profile's settings: the shared ones plus the schedule of the recompute pass."""

from __future__ import annotations

from pydantic import Field

from shared.settings import Settings


class ProfileSettings(Settings):
    profile_recompute_interval_s: float = Field(
        default=300, ge=1, le=86_400,
        description="How often RFM, lifecycle, predictions and time-based segments are "
                    "recomputed (TOUCHPOINT_PROFILE_RECOMPUTE_INTERVAL_S).")
    journey_url: str = Field(
        default="http://127.0.0.1:8003",
        description="Where /v1/kpis asks journey for the uplift (TOUCHPOINT_JOURNEY_URL).")
    kpis_uplift_timeout_s: float = Field(
        default=2.0, gt=0, le=30,
        description="How long /v1/kpis waits for journey's uplift before answering without "
                    "it (TOUCHPOINT_KPIS_UPLIFT_TIMEOUT_S).")
