"""The SSRF guard on real sockets: every provider's connection is resolved and checked first.

Spellings of loopback that only DNS or inet_aton turn into 127.0.0.1, SMTP to an internal
port (no connection at all, so no EHLO), a webhook that redirects inward (not followed), the
operator's trusted default channel still reaching the loopback mail catcher, and the API
refusing `allow_private_targets` unless the operator allows it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import delete, insert, update

from services.messaging.app import create_app
from services.messaging.providers import email, webhook
from services.messaging.providers.base import Outbound, PermanentFailure
from services.messaging.providers.guard import allowed_addresses
from services.messaging.tables import api_keys, channels
from shared.auth import hash_key
from shared.kafka.admin import ensure_topics
from shared.settings import Settings
from tests.support.servers import serve_app
from tests.support.smtp import Inbox

pytestmark = pytest.mark.integration
LOOP = {"loop_scope": "session"}

# What a resolver (DNS, /etc/hosts, inet_aton's shorthand) turns into loopback or "any".
LOOPBACK_SPELLINGS = ["localhost", "127.1", "127.0.1", "2130706433",
                      "0x7f000001", "0x7f.0.0.1", "0177.0.0.1", "0", "0.0.0.0", "::1", "[::1]",
                      "::ffff:127.0.0.1", "[::ffff:7f00:1]", "::127.0.0.1", "64:ff9b::7f00:1",
                      "2002:7f00:1::1"]


class Listener:
    """A TCP port that counts connections and says nothing (an internal service)."""

    def __init__(self) -> None:
        self.connections = 0

    async def __aenter__(self) -> int:
        async def accept(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            writer.close()

        self.server = await asyncio.start_server(accept, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *_exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()


def _mail(to: str) -> Outbound:
    return Outbound(message_id=str(uuid.uuid4()), workspace_id="w", to=to, subject="guard",
                    text="hello")


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
async def test_every_loopback_spelling_is_refused_after_resolution(host: str) -> None:
    with pytest.raises(PermanentFailure, match="blocked"):
        await allowed_addresses(host, 25, allow_private=False)


async def test_smtp_to_an_internal_port_never_connects() -> None:
    listener = Listener()
    async with listener as port:
        for host in ("127.0.0.1", "localhost", "0x7f000001", "::ffff:127.0.0.1"):
            provider = email.SmtpProvider(
                email.Settings(host=host, port=port, sender="a@shop.example"), email.Secrets())
            with pytest.raises(PermanentFailure, match="blocked"):
                await provider.send(_mail("x@shop.example"))
            await provider.close()
    assert listener.connections == 0


async def test_trusted_default_smtp_reaches_the_loopback_catcher(
        smtp: tuple[str, Inbox]) -> None:
    url, inbox = smtp
    settings, secrets = email.settings_from_url(url, "a@shop.example")
    provider = email.SmtpProvider(settings, secrets, allow_private=True)
    to = f"guard-{uuid.uuid4().hex[:8]}@shop.example"
    await provider.send(_mail(to))
    await provider.close()
    assert (await inbox.wait_for_mail(to, "guard"))["To"] == to


async def test_a_redirect_is_not_followed() -> None:
    hits = {"hook": 0, "internal": 0}
    app = FastAPI()

    @app.post("/hook")
    async def hook() -> Response:
        hits["hook"] += 1
        return RedirectResponse("http://169.254.169.254/latest/meta-data/", status_code=307)

    @app.post("/internal")
    async def internal() -> Response:
        hits["internal"] += 1
        return Response("{}")

    secret = webhook.Secrets(signing_secret="whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3")
    async with serve_app(app) as url:
        loose = webhook.WebhookProvider(webhook.Settings(), secret, allow_private=True)
        for target in (f"{url}/hook", f"{url}/hook?to={url}/internal"):
            with pytest.raises(PermanentFailure, match="307"):
                await loose.send(Outbound(str(uuid.uuid4()), "w", target, data={"a": 1}))
        await loose.close()
        strict = webhook.WebhookProvider(webhook.Settings(), secret, allow_private=False)
        with pytest.raises(PermanentFailure, match="blocked"):
            await strict.send(Outbound(str(uuid.uuid4()), "w", f"{url}/hook", data={}))
        await strict.close()
    assert hits == {"hook": 2, "internal": 0}


@pytest_asyncio.fixture(scope="module", **LOOP)
async def messaging(settings: Settings) -> AsyncIterator[tuple[FastAPI, str]]:
    own = settings.model_copy(update={"topic_prefix": f"guard-{uuid.uuid4().hex[:8]}."})
    await ensure_topics(own)
    app = create_app(own)
    async with serve_app(app) as url:
        async with httpx.AsyncClient() as http:
            for _ in range(200):
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
        yield app, url


async def test_api_channels_cannot_reach_private_targets(
        messaging: tuple[FastAPI, str], unique: str) -> None:
    app, url = messaging
    engine, m = app.state.runtime.engine, app.state.messaging
    ws, key = f"guard-{unique}", f"tp_admin_guard_{unique}_0123456789abcdef"
    async with engine.begin() as conn:
        await conn.execute(insert(api_keys).values(key_hash=hash_key(key), kind="admin",
                                                   workspace_id=ws, name="guard test"))
    listener = Listener()
    try:
        async with listener as port, httpx.AsyncClient(
                headers={"Authorization": f"Bearer {key}"}) as http:
            body = {"settings": {"host": "localhost", "port": port,
                                 "sender": "a@shop.example"}}
            r = await http.put(f"{url}/v1/channels/email/smtp",
                               json={**body, "allow_private_targets": True})
            assert r.status_code == 400, r.text
            assert r.json()["errors"][0]["field"] == "allow_private_targets"
            r = await http.put(f"{url}/v1/channels/email/smtp", json=body)
            assert r.status_code == 200, r.text
            route = await m.routes.route(engine, ws, "email", "x@shop.example")
            with pytest.raises(PermanentFailure, match="blocked"):
                await route.provider.send(_mail("x@shop.example"))
            # An allow stored earlier is not honoured while the operator does not allow it.
            async with engine.begin() as conn:
                await conn.execute(update(channels).where(channels.c.workspace_id == ws)
                                   .values(allow_private_targets=True,
                                           updated_at=channels.c.updated_at
                                           + timedelta(seconds=1)))
            m.routes.forget(ws)
            route = await m.routes.route(engine, ws, "email", "x@shop.example")
            with pytest.raises(PermanentFailure, match="blocked"):
                await route.provider.send(_mail("x@shop.example"))
        assert listener.connections == 0
    finally:
        async with engine.begin() as conn:
            await conn.execute(delete(channels).where(channels.c.workspace_id == ws))
            await conn.execute(delete(api_keys).where(api_keys.c.workspace_id == ws))
