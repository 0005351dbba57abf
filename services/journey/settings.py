"""Journey's settings: the shared ones plus how long sends and decision traces are kept."""

from __future__ import annotations

from pydantic import Field

from shared.settings import Settings


class JourneySettings(Settings):
    journey_trace_retention_days: float = Field(
        default=90, ge=1, le=3650,
        description="Decisions (the \"why?\" trace) of instances that ended longer ago than "
                    "this are deleted (TOUCHPOINT_JOURNEY_TRACE_RETENTION_DAYS).")
    journey_sends_retention_days: float = Field(
        default=90, ge=1, le=3650,
        description="Sends are kept at least this long, and longer when a published "
                    "frequency cap looks further back (TOUCHPOINT_JOURNEY_SENDS_RETENTION_DAYS).")
