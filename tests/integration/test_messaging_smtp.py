"""The SMTP provider against real SMTP servers on loopback: what it sends, and which
failures it retries (only those where the message surely was not accepted)."""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from services.messaging.providers.base import (
    InvalidAddress,
    Outbound,
    OutcomeUnknown,
    PermanentFailure,
    TransientFailure,
)
from services.messaging.providers.email import Secrets, Settings, SmtpProvider
from shared.testing.net import free_port
from shared.testing.smtp import smtp_sink

pytestmark = pytest.mark.integration


def _provider(port: int, sender: str = "shop@x.io") -> SmtpProvider:
    # A local test server: trusted, as the operator's TOUCHPOINT_SMTP_URL channel is.
    return SmtpProvider(Settings(host="127.0.0.1", port=port, sender=sender), Secrets(),
                        allow_private=True)


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


class Envelopes:
    """An aiosmtpd handler that keeps each envelope and can refuse MAIL, RCPT or EHLO."""

    def __init__(self, mail: str | None = None, rcpt: str | None = None,
                 ehlo: str | None = None) -> None:
        self.mail, self.rcpt, self.ehlo = mail, rcpt, ehlo
        self.received: list[tuple[str, list[str]]] = []
        self.helo_seen = False

    async def handle_EHLO(self, _server: Any, session: Any, _envelope: Any,  # noqa: N802
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        return [self.ehlo] if self.ehlo else responses

    async def handle_HELO(self, _server: Any, session: Any, _envelope: Any,  # noqa: N802
                          hostname: str) -> str:
        session.host_name, self.helo_seen = hostname, True
        return "250 hi"

    async def handle_MAIL(self, _server: Any, _session: Any, envelope: Any,  # noqa: N802
                          address: str, options: list[str]) -> str:
        if self.mail:
            return self.mail
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, _server: Any, _session: Any, envelope: Any,  # noqa: N802
                          address: str, _options: list[str]) -> str:
        if self.rcpt and address.startswith("gone"):
            return self.rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


@contextmanager
def _server(handler: Envelopes, *, smtputf8: bool = False) -> Iterator[int]:
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port,
                            enable_SMTPUTF8=smtputf8)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def _mail(to: str, i: int = 0) -> Outbound:
    return Outbound(**{**MAIL.__dict__, "to": to, "message_id": f"m-{i}"})


async def test_envelope_addresses_plain_display_name_and_quoted() -> None:
    """Plain addresses are quoted directly; others go through aiosmtplib's quote_address."""
    handler = Envelopes()
    with _server(handler) as port:
        provider = _provider(port, sender="Shop <shop@x.io>")
        for i, to in enumerate(["b@x.io", "Bob Example <bob@x.io>", '"bob smith"@x.io',
                                "  c.d+tag@sub.x.io "]):
            await provider.send(_mail(to, i))
        await provider.close()
    assert handler.received == [("shop@x.io", ["b@x.io"]), ("shop@x.io", ["bob@x.io"]),
                                ("shop@x.io", ['"bob smith"@x.io']),
                                ("shop@x.io", ["c.d+tag@sub.x.io"])]


async def test_server_without_ehlo_is_greeted_with_helo() -> None:
    handler = Envelopes(ehlo="502 command not implemented")
    with _server(handler) as port:
        provider = _provider(port)
        await provider.send(_mail("b@x.io"))
        await provider.close()
    assert handler.helo_seen and handler.received == [("shop@x.io", ["b@x.io"])]


async def test_refused_rcpt_is_invalid_address_and_the_connection_stays_usable() -> None:
    handler = Envelopes(rcpt="550 5.1.1 no such user")
    with _server(handler) as port:
        provider = _provider(port)
        with pytest.raises(InvalidAddress, match="SMTP 550"):
            await provider.send(_mail("gone@x.io"))
        await provider.send(_mail("b@x.io", 1))  # RSET, then the pooled connection again
        assert len(provider._idle) == 1
        await provider.close()
    assert handler.received == [("shop@x.io", ["b@x.io"])]


@pytest.mark.parametrize(("reply", "error"), [("451 4.3.0 try later", TransientFailure),
                                              ("554 5.7.1 sender rejected", PermanentFailure)])
async def test_refused_mail_from(reply: str, error: type[Exception]) -> None:
    handler = Envelopes(mail=reply)
    with _server(handler) as port:
        provider = _provider(port)
        with pytest.raises(error, match=f"SMTP {reply[:3]}"):
            await provider.send(_mail("b@x.io"))
        await provider.close()
    assert handler.received == []


@pytest.mark.parametrize(("sender", "to", "delivered"), [
    # email.utils.parseaddr (in aiosmtplib's quote_address) drops what follows CR/LF ...
    ("shop@x.io", "b@x.io\r\nRCPT TO:<c@y.io>", ("shop@x.io", ["b@x.io"])),
    ("shop@x.io", "b@x.io\r\nRSET", ("shop@x.io", ["b@x.io"])),
    ("Shop <shop@x.io>\r\nRSET", "b@x.io", ("shop@x.io", ["b@x.io"])),
    # ... and what it leaves unsafe (whitespace) or not ASCII is a ValueError.
    ("shop@x.io", "RSET b@x.io\r\n", ValueError),
    ("shop@x.io", "a b@x.io", ValueError),
    ("RSET shop@x.io\r\n", "b@x.io", ValueError),
])
async def test_unsafe_addresses_never_reach_the_command_line(
        sender: str, to: str, delivered: tuple[str, list[str]] | type[Exception]) -> None:
    """Exactly as with aiosmtplib's own mail()/rcpt()."""
    handler = Envelopes()
    with _server(handler) as port:
        provider = _provider(port, sender=sender)
        if isinstance(delivered, tuple):
            await provider.send(_mail(to))
        else:
            with pytest.raises(delivered):
                await provider.send(_mail(to))
        await provider.close()
    assert handler.received == ([delivered] if isinstance(delivered, tuple) else [])


class Utf8Inbox(Envelopes):
    def __init__(self) -> None:
        super().__init__()
        self.contents: list[bytes] = []
        self.options: list[list[str]] = []

    async def handle_MAIL(self, _server: Any, _session: Any, envelope: Any,  # noqa: N802
                          address: str, options: list[str]) -> str:
        self.options.append(options)
        return await super().handle_MAIL(_server, _session, envelope, address, options)

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802
        self.contents.append(envelope.original_content or envelope.content)
        return await super().handle_DATA(_server, _session, envelope)


async def test_non_ascii_addresses_go_under_smtputf8_when_offered() -> None:
    from email import message_from_string, policy

    handler = Utf8Inbox()
    with _server(handler, smtputf8=True) as port:
        provider = _provider(port)
        await provider.send(_mail("Zoë Ünal <zoë@bücher.de>", 0))
        await provider.send(_mail("Zoë Ünal <zoe@bücher.de>", 1))  # IDNA domain: plain ASCII
        await provider.close()
    assert handler.received == [("shop@x.io", ["zoë@xn--bcher-kva.de"]),
                                ("shop@x.io", ["zoe@xn--bcher-kva.de"])]
    assert handler.options[0] == ["SMTPUTF8"] and handler.options[1] == []
    first = message_from_string(handler.contents[0].decode(), policy=policy.default)
    assert first["To"].addresses[0].display_name == "Zoë Ünal"
    assert first["To"].addresses[0].addr_spec == "zoë@xn--bcher-kva.de"
    second = message_from_string(handler.contents[1].decode(), policy=policy.default)
    assert second["To"].addresses[0].display_name == "Zoë Ünal"
    assert second["To"].addresses[0].addr_spec == "zoe@xn--bcher-kva.de"
    assert handler.contents[1].isascii()


async def test_non_ascii_address_without_smtputf8_fails_with_a_clear_reason() -> None:
    handler = Envelopes()
    with _server(handler) as port:
        provider = _provider(port)
        with pytest.raises(PermanentFailure, match="SMTPUTF8"):
            await provider.send(_mail("b\u00e9@x.io"))
        await provider.send(_mail("Zoë <zoe@x.io>", 1))  # a non-ASCII name needs nothing
        await provider.close()
    assert handler.received == [("shop@x.io", ["zoe@x.io"])]
