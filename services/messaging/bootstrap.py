"""What the handlers and routes share: settings, keys, providers, rate limits, link URLs."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.messaging import store
from services.messaging.domain.tokens import sign_token
from services.messaging.providers import email
from services.messaging.providers.base import PermanentFailure, Provider
from services.messaging.providers.registry import PROVIDERS, provider_for_address
from services.messaging.secrets import SecretBox
from services.messaging.settings import MessagingSettings
from services.messaging.tables import channels
from shared.db.outbox import OutboxRelay, OutboxRow
from shared.runtime import ServiceRuntime

CONFIG_TTL = 5.0  # seconds another replica may keep using a changed channel config


@dataclass
class SharedLimit:
    """A channel's `rate_per_second`, for all replicas together: a token bucket in Postgres
    (one UPDATE per send, only on channels with a rate limit)."""

    engine: AsyncEngine
    key: tuple[str, str, str]  # workspace, channel, provider
    rate: float

    async def reserve(self) -> float:
        """Take a token; the seconds to wait before sending."""
        async with store.transaction(self.engine) as db:
            return await store.take_token(db, self.key, self.rate, max(1.0, self.rate))


@dataclass
class Route:
    """The provider chosen for one send. `slots`: the provider calls it may have in flight
    (its connection pool); a message is marked `sending` only once it holds one."""

    name: str
    provider: Provider
    limiter: SharedLimit | None
    slots: asyncio.Semaphore
    pool: int  # how many slots


HTTP_POOL = 100  # httpx's default connection limit, which the HTTP providers' clients keep


def route_for(name: str, provider: Provider, limiter: SharedLimit | None) -> Route:
    """A route whose slots are its provider's connection pool (SMTP's `pool_size`)."""
    pool = provider.settings.pool_size if isinstance(provider, email.SmtpProvider) \
        else HTTP_POOL
    return Route(name, provider, limiter, asyncio.Semaphore(pool), pool)


class Messaging:
    def __init__(self, settings: MessagingSettings) -> None:
        self.settings = settings
        self.box = SecretBox(settings.secrets)
        self._configs: dict[str, tuple[float, list[Any]]] = {}
        self._built: dict[tuple[str, str, str], tuple[Any, Route]] = {}
        self._default_smtp: Route | None = None
        self._lock = asyncio.Lock()
        self._loading = asyncio.Lock()
        self._publishing: asyncio.Task[None] | None = None
        self._pending: list[OutboxRow] = []  # outbox rows to publish

    # -- providers -------------------------------------------------------------------
    def forget(self, workspace_id: str) -> None:
        """Channel config changed through this process's API: reload it at once."""
        self._configs.pop(workspace_id, None)

    async def channel_configs(self, engine: AsyncEngine, workspace_id: str) -> list[Any]:
        """The workspace's channel rows, cached for CONFIG_TTL seconds."""
        cached = self._configs.get(workspace_id)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        async with self._loading:  # one query when a whole wave finds the cache stale
            cached = self._configs.get(workspace_id)
            if cached and cached[0] > time.monotonic():
                return cached[1]
            async with engine.connect() as conn:
                rows = list((await conn.execute(select(channels).where(
                    channels.c.workspace_id == workspace_id))).mappings())
            self._configs[workspace_id] = (time.monotonic() + CONFIG_TTL, rows)
            return rows

    async def route(self, engine: AsyncEngine, workspace_id: str, channel: str,
                    address: str) -> Route:
        configs = await self.channel_configs(engine, workspace_id)
        rows = [r for r in configs if r["channel"] == channel]
        name = provider_for_address(channel, address, [r["provider"] for r in rows])
        if name is None:
            if channel == "email":
                return self._default_email()
            raise PermanentFailure(f"no {channel} provider configured for this address")
        row = next(r for r in rows if r["provider"] == name)
        key = (workspace_id, channel, name)
        async with self._lock:
            built = self._built.get(key)
            if built and built[0] == row["updated_at"]:
                return built[1]
            kind = PROVIDERS[name]
            try:
                secrets = kind.secrets.model_validate(self.box.open(row["secrets"]))
            except ValueError as exc:  # undecryptable (key changed) or no longer valid
                raise PermanentFailure(f"{name} credentials unusable: {exc}"[:300]) from exc
            status_url = f"{self.settings.messaging_public_url}/v1/providers/{name}/status/" \
                         f"{workspace_id}"
            # A stored allow is honoured only while the operator allows private targets.
            private = row["allow_private_targets"] and \
                self.settings.messaging_allow_private_targets
            provider = kind.build(kind.settings.model_validate(row["settings"]), secrets,
                                  private, status_url)
            rate = row["rate_per_second"]
            fresh = route_for(name, provider, SharedLimit(engine, key, rate) if rate else None)
            if built:
                await built[1].provider.close()
            self._built[key] = (row["updated_at"], fresh)
            return fresh

    def _default_email(self) -> Route:
        if self._default_smtp is None:
            smtp_settings, smtp_secrets = email.settings_from_url(self.settings.smtp_url,
                                                                  self.settings.email_from)
            # The operator's own TOUCHPOINT_SMTP_URL is trusted: a mail catcher or relay on
            # loopback or the private network is what it usually is.
            self._default_smtp = route_for("smtp", email.SmtpProvider(
                smtp_settings, smtp_secrets, allow_private=True), None)
        return self._default_smtp

    async def close(self) -> None:
        await self.drain()
        routes = [r for _, r in self._built.values()]
        if self._default_smtp:
            routes.append(self._default_smtp)
        self._built.clear()
        for r in routes:
            await r.provider.close()

    # -- publishing ------------------------------------------------------------------
    def publish_in_background(self, rt: ServiceRuntime, ids: list[OutboxRow]) -> None:
        """Publish outbox rows soon, in order. Rows that come in while a publish waits for
        the broker's acks go out together in the next one: each wave's events leave at
        once when the service is idle, and under load the relay is called a few times per
        batch rather than once per wave (each call is a wait for acks and a delete)."""
        if not ids or rt.relay is None:
            return
        self._pending += ids
        if self._publishing is None or self._publishing.done():
            self._publishing = asyncio.create_task(self._publish_pending(rt.relay),
                                                   name="messaging-publish")

    async def _publish_pending(self, relay: OutboxRelay) -> None:
        while self._pending:
            ids, self._pending = self._pending[:relay.batch], self._pending[relay.batch:]
            await relay.publish(ids)  # never raises: failures are left to the sweeper

    async def drain(self) -> None:
        while self._publishing is not None and not self._publishing.done():
            await self._publishing

    # -- links ------------------------------------------------------------------------
    def _token(self, kind: str, workspace_id: str, profile_id: str, message_id: str,
               channel: str, **extra: str) -> str:
        return sign_token(self.box.token_key, {"k": kind, "w": workspace_id, "p": profile_id,
                                               "m": message_id, "c": channel, **extra})

    def unsubscribe_url(self, workspace_id: str, profile_id: str, message_id: str,
                        channel: str, topic: str | None) -> str:
        extra = {"t": topic} if topic else {}
        token = self._token("u", workspace_id, profile_id, message_id, channel, **extra)
        return f"{self.settings.messaging_public_url}/u/{token}"

    def open_url(self, workspace_id: str, profile_id: str, message_id: str) -> str:
        token = self._token("o", workspace_id, profile_id, message_id, "email")
        return f"{self.settings.messaging_public_url}/t/o/{token}.gif"

    def click_url(self, workspace_id: str, profile_id: str, message_id: str, url: str) -> str:
        token = self._token("c", workspace_id, profile_id, message_id, "email", u=url)
        return f"{self.settings.messaging_public_url}/t/c/{token}"
