"""The generic webhook channel: signed POSTs in the Standard Webhooks format."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Annotated

import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from standardwebhooks.webhooks import Webhook

from services.messaging.providers.base import Outbound, OutcomeUnknown, TransientFailure
from services.messaging.providers.http import pinned_target, post, raise_for_outcome


def standard_webhooks_secret(value: str) -> str:
    """Validator: `whsec_` and the base64 of at least 16 random bytes."""
    raw = value.removeprefix("whsec_")
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except ValueError as exc:
        raise ValueError("must be whsec_ followed by base64") from exc
    if not value.startswith("whsec_") or len(key) < 16:
        raise ValueError("must be whsec_ followed by the base64 of at least 16 bytes")
    return value


SigningSecret = Annotated[str, AfterValidator(standard_webhooks_secret)]


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timeout_seconds: float = Field(default=10, gt=0, le=60)


class Secrets(BaseModel):
    model_config = ConfigDict(extra="forbid")
    signing_secret: SigningSecret = Field(
        min_length=8, max_length=300, description="whsec_<base64>, as Standard Webhooks "
                                                  "defines it")


class WebhookProvider:
    def __init__(self, settings: Settings, secrets: Secrets, *, allow_private: bool) -> None:
        self.signer = Webhook(secrets.signing_secret)
        self.allow_private = allow_private
        self.client = httpx.AsyncClient(timeout=settings.timeout_seconds, follow_redirects=False)

    async def send(self, message: Outbound) -> str | None:
        body = message.text if message.text is not None else json.dumps(message.data)
        now = datetime.now(UTC)
        # webhook-id is the message id on every attempt, so receivers can deduplicate: that
        # is what makes retrying an unknown outcome safe here (unlike SMTP).
        headers = {"content-type": "application/json", "webhook-id": message.message_id,
                   "webhook-timestamp": str(int(now.timestamp())),
                   "webhook-signature": self.signer.sign(message.message_id, now, body),
                   "user-agent": "Touchpoint-Webhooks/1"}
        target, host, ext = await pinned_target(message.to, allow_private=self.allow_private)
        try:
            response = await post(self.client, target, "webhook", content=body.encode(),
                                  headers={**headers, **host}, extensions=ext)
        except OutcomeUnknown as exc:
            raise TransientFailure(str(exc).replace("; not retried to avoid a duplicate", ""))\
                from exc
        raise_for_outcome(response, "webhook")
        return None

    async def close(self) -> None:
        await self.client.aclose()
