"""Journey's settings: the shared ones plus how long sends and decision traces are kept."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from shared.settings import Settings

RetentionDays = Annotated[float, Field(ge=1, le=3650)]  # a day to ten years


class JourneySettings(Settings):
    journey_trace_retention_days: RetentionDays = Field(
        default=90, description="Decisions (the \"why?\" trace) of instances that ended longer "
                                "ago than this are deleted "
                                "(TOUCHPOINT_JOURNEY_TRACE_RETENTION_DAYS).")
    journey_sends_retention_days: RetentionDays = Field(
        default=90, description="Sends are kept at least this long, and longer when a "
                                "published frequency cap looks further back "
                                "(TOUCHPOINT_JOURNEY_SENDS_RETENTION_DAYS).")
    messaging_url: str | None = Field(
        default=None, description="Messaging's base URL: journey reads a template's channel, "
                                  "category and topic there (TOUCHPOINT_MESSAGING_URL).")
    profile_url: str | None = Field(
        default=None, description="Profile's base URL: journey checks segment keys and the "
                                  "workspace time zone and revenue_properties (goal values) there "
                                  "(TOUCHPOINT_PROFILE_URL).")
    service_key: str | None = Field(
        default=None, description="The default workspace's admin key, which journey calls "
                                  "messaging and profile with for that workspace when no "
                                  "caller's key is at hand; default: the bootstrap admin key "
                                  "(TOUCHPOINT_SERVICE_KEY).")
    service_keys: dict[str, str] = Field(
        default_factory=dict,
        description="The other workspaces' admin keys, as JSON {\"workspace\": \"key\"}: "
                    "journey reads each workspace's zone and revenue_properties from profile "
                    "with that workspace's own key. A workspace with none gets the defaults "
                    "(UTC, revenue/total), never another's (TOUCHPOINT_SERVICE_KEYS).")
    directory_ttl_s: float = Field(
        default=30, ge=0, le=3600,
        description="How long template, segment and time-zone answers are cached "
                    "(TOUCHPOINT_DIRECTORY_TTL_S).")
