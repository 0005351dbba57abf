"""Email over SMTP (aiosmtplib), with a small pool of open connections.

A send is MAIL, RCPT, DATA on a pooled connection. What a failure means depends on how
far it got: before DATA nothing was accepted (retry is safe); a timeout or dropped
connection during DATA may mean the server took the message, so it is not retried.
"""

from __future__ import annotations

import asyncio
import binascii
import re
from email.header import Header
from email.utils import formataddr, formatdate, parseaddr
from functools import lru_cache
from typing import Literal
from urllib.parse import urlparse

import aiosmtplib
from aiosmtplib.email import quote_address
from pydantic import BaseModel, ConfigDict, Field

from services.messaging.domain.render import Rendered
from services.messaging.providers.base import (
    InvalidAddress,
    Outbound,
    OutcomeUnknown,
    PermanentFailure,
    TransientFailure,
)
from services.messaging.providers.guard import connect_pinned
from services.messaging.providers.webhook import SigningSecret

CRLF = "\r\n"
HARD_BOUNCE_CODES = {550, 551, 553}  # mailbox unavailable / not local / name not allowed
# A plain ASCII dot-atom address, which aiosmtplib's quote_address would return unchanged
# inside <> (its email.utils.parseaddr costs ~10 us per call). Anything else (display
# names, quoted local parts, comments, non-ASCII, whitespace, CR/LF) takes quote_address.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = Field(min_length=1, max_length=255)
    port: int = Field(default=25, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "none"
    sender: str = Field(min_length=3, max_length=320, description="From: header")
    pool_size: int = Field(default=8, ge=1, le=64)
    timeout_seconds: float = Field(default=10, gt=0, le=120)


class Secrets(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str | None = Field(default=None, max_length=320)
    password: str | None = Field(default=None, max_length=1000)
    status_webhook_secret: SigningSecret | None = Field(
        default=None, max_length=300,
        description="whsec_... secret that signs bounce/complaint webhooks (Standard Webhooks)")


def settings_from_url(smtp_url: str, sender: str) -> tuple[Settings, Secrets]:
    """The default email channel, from TOUCHPOINT_SMTP_URL (smtp:// or smtps://)."""
    url = urlparse(smtp_url)
    if url.scheme not in ("smtp", "smtps"):
        raise ValueError("TOUCHPOINT_SMTP_URL must be smtp://host:port or smtps://host:port")
    tls = url.scheme == "smtps"
    return (Settings(host=url.hostname or "127.0.0.1", port=url.port or (465 if tls else 25),
                     security="tls" if tls else "none", sender=sender),
            Secrets(username=url.username, password=url.password))


def _header(name: str, value: str) -> str:
    # CR/LF from rendered data must never start a new header (header injection).
    value = " ".join(value.splitlines())
    if value.isascii() and len(name) + len(value) < 900:
        return f"{name}: {value}\r\n"
    return f"{name}: {Header(value, 'utf-8', header_name=name).encode(linesep=CRLF)}\r\n"


_NEWLINE = re.compile(r"\r\n|\r|\n")
MAX_7BIT_LINE = 998  # RFC 5322: octets per line, CRLF excluded


def _part(content_type: str, body: str) -> str:
    """A body part: 7bit when it is ASCII with short lines (most templates), else
    quoted-printable, both what mailbox providers expect. Not base64: spam filters score
    base64 text (SpamAssassin's MIME_BASE64_TEXT), and it is a third larger for the relay."""
    lines = _NEWLINE.split(body)
    if body.isascii() and "\0" not in body and max(map(len, lines)) <= MAX_7BIT_LINE:
        encoding, encoded = "7bit", CRLF.join(lines)
    else:  # binascii's encoder (C) soft-wraps at 76 columns; its line ends made CRLF
        encoding = "quoted-printable"
        qp = binascii.b2a_qp(CRLF.join(lines).encode(), istext=True).decode("ascii")
        encoded = CRLF.join(_NEWLINE.split(qp))
    return (f'Content-Type: {content_type}; charset="utf-8"\r\n'
            f"Content-Transfer-Encoding: {encoding}\r\n\r\n{encoded}")


# An internationalised address as SMTPUTF8 carries it: no whitespace, controls, quotes,
# brackets or second @ (quoted local parts stay ASCII-only, through quote_address).
_UTF8_PART = r"[^\s<>()\[\]\\,;:\"@\x00-\x1f\x7f]+"
_UTF8_ADDRESS = re.compile(rf"{_UTF8_PART}@{_UTF8_PART}")
NO_SMTPUTF8 = ("the address is not ASCII and the SMTP server does not offer SMTPUTF8 "
               "(RFC 6531): not sent")


def ascii_domain(address: str) -> str:
    """The address with an internationalised domain written in IDNA (punycode), so only a
    non-ASCII local part needs SMTPUTF8."""
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        return address


def _to_header(to: str, address: str, utf8: bool) -> str:
    """To: with a non-ASCII display name encoded (RFC 2047) and the address itself left
    readable: ASCII, or UTF-8 under SMTPUTF8 (RFC 6532)."""
    name = parseaddr(to)[0] if "<" in to else ""
    if not name:
        return _header("To", address) if not utf8 else f"To: {address}\r\n"
    if address.isascii():
        return f"To: {formataddr((name, address), charset='utf-8')}\r\n"
    shown = formataddr((name, "x@x"), charset="utf-8").rsplit("<", 1)[0]
    return f"To: {shown}<{address}>\r\n"


@lru_cache(maxsize=64)
def _from_header(sender: str) -> str:
    # The sender is the channel's setting: parsed once, not for every message.
    name, addr = parseaddr(sender)
    return (f"From: {formataddr((name, addr), charset='utf-8')}\r\n" if name
            else _header("From", sender))


def build_email(*, sender: str, to: str, rendered: Rendered, message_id: str,
                headers: dict[str, str] | None = None, address: str | None = None,
                utf8: bool = False) -> bytes:
    """The message as sent: text and HTML alternatives. Assembled directly
    (with the stdlib's encoders): `email.message` costs 0.5-2.6 ms per message in header
    folding alone, the largest item of a send's CPU budget. `address` is the recipient's
    address as sent (IDNA domain); `utf8`: the message goes under SMTPUTF8."""
    address = address or (parseaddr(to)[1] if "<" in to else to.strip())
    to_header = (_header("To", to) if to.isascii() and not utf8
                 else _to_header(to, address, utf8))
    lines = [_from_header(sender), to_header,
             _header("Subject", rendered.subject or ""),
             _header("Date", formatdate(localtime=False)),
             # A stable Message-ID lets receivers spot a duplicate should one slip through.
             _header("Message-ID", message_id_header(message_id)),
             _header("X-Touchpoint-Message", message_id), "MIME-Version: 1.0\r\n"]
    lines += [_header(k, v) for k, v in (headers or {}).items()]
    if not rendered.html:
        body = _part("text/plain", rendered.text or "")
    else:
        boundary = f"tp-{message_id.replace('-', '')}"
        lines.append(f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n')
        body = (f"\r\n--{boundary}\r\n{_part('text/plain', rendered.text or '')}"
                f"\r\n--{boundary}\r\n{_part('text/html', rendered.html)}"
                f"\r\n--{boundary}--\r\n")
    return ("".join(lines) + body).encode("utf-8" if utf8 else "ascii")


def message_id_header(message_id: str) -> str:
    return f"<{message_id.replace('-', '')}@touchpoint>"


class SmtpProvider:
    """SMTP through the address guard: the host is resolved and checked on every new
    connection, which goes to the checked address (`allow_private` only for trusted ones)."""

    def __init__(self, settings: Settings, secrets: Secrets, *,
                 allow_private: bool = False) -> None:
        self.settings, self.secrets, self.allow_private = settings, secrets, allow_private
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(settings.pool_size)
        self._envelope_sender = parseaddr(settings.sender)[1] or settings.sender
        try:  # MAIL's argument is the same for every message: quoted once
            self._mail_from: bytes | None = b"FROM:" + _quoted(self._envelope_sender)
        except ValueError:  # unusable: each send raises it, as aiosmtplib's mail() did
            self._mail_from = None

    async def _open(self) -> aiosmtplib.SMTP:
        s = self.settings
        sock = await connect_pinned(s.host, s.port, allow_private=self.allow_private,
                                    timeout=s.timeout_seconds)
        # On the checked socket; the host name stays for TLS (SNI and certificate check).
        client = aiosmtplib.SMTP(hostname=s.host, sock=sock, use_tls=s.security == "tls",
                                 start_tls=True if s.security == "starttls" else False,
                                 username=self.secrets.username,
                                 password=self.secrets.password, timeout=s.timeout_seconds)
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:  # never got to a transaction
            sock.close()
            raise TransientFailure(f"SMTP connect failed: {type(exc).__name__}") from exc
        return client

    async def send(self, message: Outbound) -> str | None:
        to = ascii_domain(parseaddr(message.to)[1] if "<" in message.to
                          else message.to.strip())
        utf8 = not (to.isascii() and self._envelope_sender.isascii())
        email = build_email(sender=self.settings.sender, to=message.to,
                            message_id=message.message_id,
                            rendered=Rendered(message.subject, message.html, message.text),
                            headers=message.headers, address=to, utf8=utf8)
        envelope = (self._envelope_sender, to, utf8)
        raw = email
        async with self._slots:
            client = self._idle.pop() if self._idle else await self._open()
            try:
                try:
                    await self._envelope(client, *envelope)
                except aiosmtplib.SMTPServerDisconnected:
                    # A pooled connection the server closed while idle: nothing was sent.
                    client.close()
                    client = await self._open()
                    await self._envelope(client, *envelope)
                await self._data(client, raw)
            except BaseException:
                client.close()
                raise
            self._idle.append(client)
        return message_id_header(message.message_id)

    async def _envelope(self, client: aiosmtplib.SMTP, sender: str, recipient: str,
                        utf8: bool = False) -> None:
        # What SMTP.mail() and rcpt() do, minus re-parsing the addresses on every message:
        # greet first if this connection has not (as their _ehlo_or_helo_if_needed does),
        # the same commands, the same replies accepted and the same exceptions raised.
        try:
            if client.is_ehlo_or_helo_needed:
                await _greet(client)
            if utf8:
                if not client.supports_extension("smtputf8"):
                    raise PermanentFailure(NO_SMTPUTF8)
                mail_from = b"FROM:" + _quoted_utf8(sender) + b" SMTPUTF8"
                rcpt_to = b"TO:" + _quoted_utf8(recipient)
            else:
                mail_from = self._mail_from or b"FROM:" + _quoted(sender)
                rcpt_to = b"TO:" + _quoted(recipient)
            reply = await client.execute_command(b"MAIL", mail_from)
            if reply.code != 250:
                raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, sender)
            reply = await client.execute_command(b"RCPT", rcpt_to)
            if reply.code not in (250, 251):
                raise aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, recipient)
        except aiosmtplib.SMTPServerDisconnected:
            raise
        except aiosmtplib.SMTPResponseException as exc:
            await _reset(client)
            if exc.code in HARD_BOUNCE_CODES:
                raise InvalidAddress(f"hard bounce: SMTP {exc.code} on RCPT") from exc
            if 500 <= exc.code < 600:
                raise PermanentFailure(f"SMTP {exc.code}") from exc
            raise TransientFailure(f"SMTP {exc.code}") from exc  # explicit refusal: not sent
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise TransientFailure(f"SMTP envelope failed: {type(exc).__name__}") from exc

    async def _data(self, client: aiosmtplib.SMTP, raw: bytes) -> None:
        try:
            await client.data(raw)
        except aiosmtplib.SMTPResponseException as exc:
            await _reset(client)
            if 500 <= exc.code < 600:
                raise PermanentFailure(f"SMTP {exc.code} on DATA") from exc
            raise TransientFailure(f"SMTP {exc.code} on DATA") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise OutcomeUnknown("outcome unknown: SMTP connection lost mid-transaction; "
                                 "not retried to avoid a duplicate") from exc

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()


def _quoted(address: str) -> bytes:
    """The address as MAIL/RCPT carry it: `<addr>`, ASCII; ValueError if unsafe."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>".encode("ascii")
    return quote_address(address).encode("ascii")  # as aiosmtplib's mail()/rcpt() encode


def _quoted_utf8(address: str) -> bytes:
    """An address for MAIL/RCPT under SMTPUTF8: `<addr>` in UTF-8; ValueError if unsafe."""
    if address.isascii():
        return _quoted(address)
    if not _UTF8_ADDRESS.fullmatch(address):
        raise ValueError(f"unsafe address for SMTPUTF8 ({len(address)} characters)")
    return f"<{address}>".encode()


async def _greet(client: aiosmtplib.SMTP) -> None:
    # aiosmtplib's SMTP._ehlo_or_helo_if_needed (private, so reproduced): EHLO, else HELO.
    try:
        await client.ehlo()
    except aiosmtplib.SMTPHeloError:
        if not client.is_connected:
            raise
        await client.helo()


async def _reset(client: aiosmtplib.SMTP) -> None:
    try:
        await client.rset()
    except (aiosmtplib.SMTPException, OSError):
        pass
