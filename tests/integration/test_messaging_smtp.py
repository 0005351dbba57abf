"""The SMTP provider against real SMTP servers on loopback: what it sends, and which
failures it retries (only those where the message surely was not accepted)."""

import asyncio

import pytest

from services.messaging.providers.base import (
    InvalidAddress,
    Outbound,
    OutcomeUnknown,
    TransientFailure,
)
from services.messaging.providers.email import Secrets, Settings, SmtpProvider
from shared.testing.smtp import smtp_sink

pytestmark = pytest.mark.integration


def _provider(port: int) -> SmtpProvider:
    return SmtpProvider(Settings(host="127.0.0.1", port=port, sender="shop@x.io"), Secrets())


MAIL = Outbound(message_id="m-1", workspace_id="w", to="b@x.io", subject="s", text="t",
                html="<p>t</p>", headers={"List-Unsubscribe": "<https://x.io/u/1>",
                                          "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"})


async def test_pooled_connection_sends_headers_and_parts() -> None:
    with smtp_sink() as (url, inbox):
        provider = _provider(int(url.rsplit(":", 1)[1]))
        for i in range(3):  # the same pooled connection carries several transactions
            await provider.send(Outbound(**{**MAIL.__dict__, "message_id": f"m-{i}"}))
        await provider.close()
        mails = await inbox.wait_for(3)
    assert [m["X-Touchpoint-Message"] for m in mails] == ["m-0", "m-1", "m-2"]
    assert mails[0]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mails[0]["From"] == "shop@x.io" and mails[0]["Message-ID"]
    assert mails[0].get_body(("html",)).get_content().strip() == "<p>t</p>"


async def _fake_server(script):  # type: ignore[no-untyped-def]
    server = await asyncio.start_server(script, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_smtp_errors_mid_transaction_are_not_retried() -> None:
    """A dropped connection after DATA may mean the mail was accepted: no retry."""

    async def accept_then_vanish(reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hi\r\n")
        while line := await reader.readline():
            if line.upper().startswith(b"DATA"):
                writer.close()  # the server vanishes after taking the message
                return
            writer.write(b"250 ok\r\n")
            await writer.drain()

    server, port = await _fake_server(accept_then_vanish)
    with pytest.raises(OutcomeUnknown, match="outcome unknown"):
        await _provider(port).send(MAIL)
    server.close()

    with pytest.raises(TransientFailure):  # nothing listens: safe to retry
        await _provider(1).send(MAIL)


async def test_refused_recipient_is_a_hard_bounce() -> None:
    async def refuse_rcpt(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hi\r\n")
        while line := await reader.readline():
            reply = b"550 no such user\r\n" if line.upper().startswith(b"RCPT") else b"250 ok\r\n"
            writer.write(reply)
            await writer.drain()

    server, port = await _fake_server(refuse_rcpt)
    with pytest.raises(InvalidAddress, match="hard bounce"):
        await _provider(port).send(MAIL)
    server.close()
