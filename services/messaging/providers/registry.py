"""Every provider by name: its channel, its config models and how to build it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from services.messaging.providers import email, push, sms, webhook
from services.messaging.providers.base import Provider


@dataclass(frozen=True)
class ProviderKind:
    channel: str
    settings: type[BaseModel]
    secrets: type[BaseModel]
    # (settings, secrets, allow_private, status_url) -> provider
    build: Callable[[Any, Any, bool, str | None], Provider]


PROVIDERS: dict[str, ProviderKind] = {
    "smtp": ProviderKind("email", email.Settings, email.Secrets,
                         lambda s, k, private, _url: email.SmtpProvider(
                             s, k, allow_private=private)),
    "twilio": ProviderKind("sms", sms.Settings, sms.Secrets,
                           lambda s, k, private, url: sms.TwilioProvider(
                               s, k, allow_private=private, status_url=url)),
    "webpush": ProviderKind("push", push.WebPushSettings, push.WebPushSecrets,
                            lambda s, k, private, _url: push.WebPushProvider(
                                s, k, allow_private=private)),
    "fcm": ProviderKind("push", push.FcmSettings, push.FcmSecrets,
                        lambda s, k, private, _url: push.FcmProvider(s, k, allow_private=private)),
    "webhook": ProviderKind("webhook", webhook.Settings, webhook.Secrets,
                            lambda s, k, private, _url: webhook.WebhookProvider(
                                s, k, allow_private=private)),
}


def provider_for_address(channel: str, address: str, configured: list[str]) -> str | None:
    """Which configured provider serves this address (push: subscription JSON or FCM token)."""
    if channel == "push":
        wanted = "webpush" if push.is_web_push_subscription(address) else "fcm"
        return wanted if wanted in configured else None
    return configured[0] if configured else None
