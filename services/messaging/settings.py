"""Messaging's settings: the base ones plus its public URL and sending limits."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field

from shared.settings import Settings


class MessagingSettings(Settings):
    """The installation secret (`TOUCHPOINT_SECRET`, shared settings) encrypts provider
    credentials and signs tracking links; `TOUCHPOINT_MESSAGING_PUBLIC_URL` is where
    recipients reach the tracking and unsubscribe endpoints."""

    messaging_public_url: str = "http://127.0.0.1:8004"
    # In-process attempts of one provider call before it is deferred to a durable retry.
    messaging_provider_attempts: int = Field(default=3, ge=1, le=10)
    messaging_retry_base_seconds: float = Field(default=0.2, ge=0, le=10)
    # Durable retries of transient provider failures: first delay, cap, and for how long.
    messaging_retry_delay_seconds: float = Field(default=30, ge=0.1, le=3600)
    messaging_retry_max_delay_seconds: float = Field(default=1800, ge=1, le=86_400)
    messaging_retry_for: timedelta = Field(default=timedelta(hours=6))
    # Send workers per wave (customers at once); the provider calls in flight, and what a
    # crash mid-send can leave `unknown`, are bounded by the route's pool (Route.slots).
    messaging_concurrency: int = Field(default=64, ge=1, le=1000)
    # Messages checked and rendered together (a customer's messages in one wave).
    messaging_wave_size: int = Field(default=64, ge=1, le=1000)
    messaging_track_links: bool = True
    # `money` and `date` filters: the workspace's currency and zone, unless the profile
    # snapshot has its own (`currency`, `timezone`).
    messaging_currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    messaging_timezone: str = "UTC"
    # Channels an admin configures through the API may reach private addresses (the
    # channel's `allow_private_targets`) only when the operator allows it here.
    messaging_allow_private_targets: bool = False

    def model_post_init(self, context: object) -> None:
        super().model_post_init(context)
        self.messaging_public_url = self.messaging_public_url.rstrip("/")
        try:
            ZoneInfo(self.messaging_timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("TOUCHPOINT_MESSAGING_TIMEZONE must be an IANA zone") from exc
