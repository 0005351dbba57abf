"""Push: Web Push (VAPID, payload encrypted by pywebpush) and FCM HTTP v1.

A push address is either a Web Push subscription (the browser's PushSubscription as JSON:
endpoint and keys) or an FCM registration token.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from py_vapid import Vapid02
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator
from pywebpush import WebPusher, WebPushException

from services.messaging.providers.base import (
    InvalidAddress,
    Outbound,
    PermanentFailure,
    TransientFailure,
)
from services.messaging.providers.http import pinned_target, post, raise_for_outcome


def is_web_push_subscription(address: str) -> bool:
    return address.lstrip().startswith("{")


def _payload(message: Outbound) -> dict[str, Any]:
    return {"title": message.subject or "", "body": message.text or "",
            "data": {"message_id": message.message_id, **message.data}}


class WebPushSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: str = Field(min_length=5, max_length=320, pattern=r"^(mailto:|https://)",
                         description="VAPID `sub` claim: mailto: or https: contact")
    ttl_seconds: int = Field(default=86_400, ge=0, le=2_419_200)
    timeout_seconds: float = Field(default=10, gt=0, le=60)


class WebPushSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vapid_private_key: str = Field(min_length=20, max_length=4000,
                                   description="base64url raw key, DER or PEM")

    @field_validator("vapid_private_key")
    @classmethod
    def _loads(cls, value: str) -> str:
        try:
            Vapid02.from_string(value)
        except Exception as exc:
            raise ValueError("not a usable VAPID (P-256) private key") from exc
        return value


class WebPushProvider:
    def __init__(self, settings: WebPushSettings, secrets: WebPushSecrets, *,
                 allow_private: bool) -> None:
        self.settings, self.allow_private = settings, allow_private
        self.vapid = Vapid02.from_string(secrets.vapid_private_key)
        self.client = httpx.AsyncClient(timeout=settings.timeout_seconds, follow_redirects=False)

    async def send(self, message: Outbound) -> str | None:
        try:
            subscription = json.loads(message.to)
            prepared = WebPusher(subscription)._prepare_send_data(
                data=json.dumps(_payload(message)).encode(), ttl=self.settings.ttl_seconds)
        except (ValueError, TypeError, WebPushException) as exc:
            raise InvalidAddress(f"invalid push subscription: {type(exc).__name__}") from exc
        endpoint = str(prepared["endpoint"])
        parts = urlsplit(endpoint)
        claims = {"sub": self.settings.subject, "aud": f"{parts.scheme}://{parts.netloc}",
                  "exp": int(time.time()) + 12 * 3600}
        headers = {**dict(prepared["headers"]), **self.vapid.sign(claims)}
        target, host, ext = await pinned_target(endpoint, allow_private=self.allow_private)
        response = await post(self.client, target, "push service", content=prepared["data"],
                              headers={**headers, **host}, extensions=ext)
        if response.status_code in (404, 410):
            raise InvalidAddress(f"push subscription gone (HTTP {response.status_code})")
        raise_for_outcome(response, "push service")
        location: str | None = response.headers.get("location")
        return location

    async def close(self) -> None:
        await self.client.aclose()


class FcmSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    project_id: str = Field(min_length=1, max_length=100, pattern=r"^[a-z0-9\-]+$")
    base_url: HttpUrl = HttpUrl("https://fcm.googleapis.com")
    timeout_seconds: float = Field(default=10, gt=0, le=60)


class FcmSecrets(BaseModel):
    """Either a service account (the JSON key file's fields) or a ready access token."""

    model_config = ConfigDict(extra="forbid")
    service_account: dict[str, Any] | None = None
    access_token: str | None = Field(default=None, max_length=4000)

    @field_validator("service_account")
    @classmethod
    def _has_key(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and not {"client_email", "private_key"} <= value.keys():
            raise ValueError("needs client_email and private_key")
        return value


class FcmProvider:
    SCOPE = "https://www.googleapis.com/auth/firebase.messaging"

    def __init__(self, settings: FcmSettings, secrets: FcmSecrets, *,
                 allow_private: bool) -> None:
        if not (secrets.service_account or secrets.access_token):
            raise ValueError("service_account or access_token is required")
        self.settings, self.secrets, self.allow_private = settings, secrets, allow_private
        self.client = httpx.AsyncClient(timeout=settings.timeout_seconds, follow_redirects=False)
        self._token: tuple[str, float] | None = None

    async def _access_token(self) -> str:
        if self.secrets.access_token:
            return self.secrets.access_token
        if self._token and self._token[1] > time.time() + 60:
            return self._token[0]
        account = self.secrets.service_account or {}
        token_uri = str(account.get("token_uri") or "https://oauth2.googleapis.com/token")
        now = int(time.time())
        assertion = jwt.encode({"iss": account["client_email"], "scope": self.SCOPE,
                                "aud": token_uri, "iat": now, "exp": now + 3600},
                               account["private_key"], algorithm="RS256")
        target, host, ext = await pinned_target(token_uri, allow_private=self.allow_private)
        response = await post(self.client, target, "FCM token", headers=host, extensions=ext,
                              data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                    "assertion": assertion})
        raise_for_outcome(response, "FCM token")
        body = response.json()
        self._token = (str(body["access_token"]), now + float(body.get("expires_in", 3600)))
        return self._token[0]

    async def send(self, message: Outbound) -> str | None:
        payload = _payload(message)
        body = {"message": {"token": message.to,
                            "notification": {"title": payload["title"], "body": payload["body"]},
                            "data": {k: str(v) for k, v in payload["data"].items()}}}
        url = (f"{str(self.settings.base_url).rstrip('/')}/v1/projects/"
               f"{self.settings.project_id}/messages:send")
        target, host, ext = await pinned_target(url, allow_private=self.allow_private)
        token = await self._access_token()
        response = await post(self.client, target, "FCM", json=body, extensions=ext,
                              headers={**host, "Authorization": f"Bearer {token}"})
        if response.status_code == 401:
            self._token = None  # expired early: the next attempt fetches a new one
            raise TransientFailure("FCM: access token rejected")
        if _fcm_unregistered(response):
            raise InvalidAddress("FCM registration token is invalid or unregistered")
        if response.status_code == 403:
            raise PermanentFailure("FCM: sender not allowed for this project")
        raise_for_outcome(response, "FCM")
        name = response.json().get("name") if response.content else None
        return str(name) if name else None

    async def close(self) -> None:
        await self.client.aclose()


def _fcm_unregistered(response: httpx.Response) -> bool:
    if response.status_code not in (400, 404):
        return False
    try:
        error = response.json().get("error", {})
    except ValueError:
        return False
    codes = {d.get("errorCode") for d in error.get("details", []) if isinstance(d, dict)}
    return response.status_code == 404 or "UNREGISTERED" in codes or \
        "registration token" in str(error.get("message", "")).lower()
