"""Profile's settings: the shared ones plus the schedule of the recompute pass."""

from __future__ import annotations

from pydantic import Field

from shared.settings import Settings


class ProfileSettings(Settings):
    profile_recompute_interval_s: float = Field(
        default=300, ge=1, le=86_400,
        description="How often RFM, lifecycle, predictions and time-based segments are "
                    "recomputed (TOUCHPOINT_PROFILE_RECOMPUTE_INTERVAL_S).")
