"""SMS through a Twilio-compatible REST API (base URL configurable)."""

from __future__ import annotations

import httpx
from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from services.messaging.providers.base import (
    InvalidAddress,
    Outbound,
    OutcomeUnknown,
    PermanentFailure,
)
from services.messaging.providers.http import pinned_target, post, raise_for_outcome

# Twilio error codes that mean this number will never receive: invalid / unreachable
# number, landline, recipient replied STOP.
DEAD_NUMBER_CODES = {21211, 21214, 21612, 21614, 21610}


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base_url: HttpUrl = HttpUrl("https://api.twilio.com")
    account_sid: str = Field(min_length=2, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    sender: str | None = Field(default=None, max_length=32, description="From number")
    messaging_service_sid: str | None = Field(default=None, max_length=64)
    status_callback: bool = Field(default=True, description="Ask for delivery status webhooks")
    timeout_seconds: float = Field(default=10, gt=0, le=60)


class Secrets(BaseModel):
    model_config = ConfigDict(extra="forbid")
    auth_token: str = Field(min_length=1, max_length=200)


class TwilioProvider:
    def __init__(self, settings: Settings, secrets: Secrets, *, allow_private: bool,
                 status_url: str | None) -> None:
        if not (settings.sender or settings.messaging_service_sid):
            raise ValueError("sender or messaging_service_sid is required")
        self.settings, self.secrets = settings, secrets
        self.allow_private, self.status_url = allow_private, status_url
        self.client = httpx.AsyncClient(timeout=settings.timeout_seconds,
                                        auth=(settings.account_sid, secrets.auth_token))

    async def send(self, message: Outbound) -> str | None:
        s = self.settings
        url = (f"{str(s.base_url).rstrip('/')}/2010-04-01/Accounts/{s.account_sid}"
               "/Messages.json")
        form = {"To": message.to, "Body": message.text or ""}
        if s.messaging_service_sid:
            form["MessagingServiceSid"] = s.messaging_service_sid
        else:
            form["From"] = s.sender or ""
        if s.status_callback and self.status_url:
            form["StatusCallback"] = self.status_url
        target, host, ext = await pinned_target(url, allow_private=self.allow_private)
        response = await post(self.client, target, "SMS provider", data=form, headers=host,
                              extensions=ext)
        if response.status_code == 400:
            code = _error_code(response)
            if code in DEAD_NUMBER_CODES:
                raise InvalidAddress(f"SMS provider error {code}: number cannot receive")
            raise PermanentFailure(f"SMS provider rejected the message (error {code})")
        if response.status_code >= 500 and response.status_code != 503:
            # The provider may have created the message before failing (Twilio has no
            # idempotency key, and without a sid there is nothing to look up): not resent
            # blindly but reported `unknown`, for an operator to resend. 503 (unavailable)
            # and 429 are refusals: retried.
            raise OutcomeUnknown(f"outcome unknown: SMS provider answered HTTP "
                                 f"{response.status_code}; not retried to avoid a duplicate")
        raise_for_outcome(response, "SMS provider")
        sid = _json(response).get("sid")
        return str(sid) if sid else None

    async def close(self) -> None:
        await self.client.aclose()


def _json(response: httpx.Response) -> dict[str, object]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error_code(response: httpx.Response) -> int | None:
    code = _json(response).get("code")
    return code if isinstance(code, int) else None
