"""Email over SMTP (aiosmtplib), with a small pool of open connections.

A send is MAIL, RCPT, DATA on a pooled connection. What a failure means depends on how
far it got: before DATA nothing was accepted (retry is safe); a timeout or dropped
connection during DATA may mean the server took the message, so it is not retried.
"""

from __future__ import annotations

import asyncio
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr, formatdate, parseaddr
from typing import Literal
from urllib.parse import urlparse

import aiosmtplib
from pydantic import BaseModel, ConfigDict, Field

from services.messaging.domain.render import Rendered
from services.messaging.providers.base import (
    InvalidAddress,
    Outbound,
    OutcomeUnknown,
    PermanentFailure,
    TransientFailure,
)

HARD_BOUNCE_CODES = {550, 551, 553}  # mailbox unavailable / not local / name not allowed


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
    status_webhook_secret: str | None = Field(
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


def _header(value: str) -> str:
    return value if value.isascii() else Header(value, "utf-8").encode()


def _address(value: str) -> str:
    name, addr = parseaddr(value)
    return formataddr((name, addr), charset="utf-8") if name else addr or value


def build_email(*, sender: str, to: str, rendered: Rendered, message_id: str,
                headers: dict[str, str] | None = None) -> Message:
    """The MIME message: text and HTML alternatives, our headers. Built with the compat32
    classes, about five times cheaper than `Message` on the hot path."""
    parts = [MIMEText(rendered.text or "", "plain", "utf-8")]
    if rendered.html:
        parts.append(MIMEText(rendered.html, "html", "utf-8"))
    msg: Message = parts[0] if len(parts) == 1 else MIMEMultipart("alternative", _subparts=parts)
    msg["From"] = _address(sender)
    msg["To"] = _address(to)
    msg["Subject"] = _header(rendered.subject or "")
    msg["Date"] = formatdate(localtime=False)
    # A stable Message-ID lets receiving systems spot a duplicate if one ever slips through.
    msg["Message-ID"] = f"<{message_id.replace('-', '')}@touchpoint>"
    msg["X-Touchpoint-Message"] = message_id
    for name, value in (headers or {}).items():
        msg[name] = _header(value)
    return msg


class SmtpProvider:
    def __init__(self, settings: Settings, secrets: Secrets) -> None:
        self.settings, self.secrets = settings, secrets
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(settings.pool_size)

    async def _open(self) -> aiosmtplib.SMTP:
        s = self.settings
        client = aiosmtplib.SMTP(hostname=s.host, port=s.port, use_tls=s.security == "tls",
                                 start_tls=True if s.security == "starttls" else False,
                                 username=self.secrets.username,
                                 password=self.secrets.password, timeout=s.timeout_seconds)
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:  # never got to a transaction
            raise TransientFailure(f"SMTP connect failed: {type(exc).__name__}") from exc
        return client

    async def send(self, message: Outbound) -> str | None:
        email = build_email(sender=self.settings.sender, to=message.to,
                            message_id=message.message_id,
                            rendered=Rendered(message.subject, message.html, message.text),
                            headers=message.headers)
        envelope = (parseaddr(self.settings.sender)[1], parseaddr(message.to)[1])
        raw = email.as_bytes()
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
        return str(email["Message-ID"])

    async def _envelope(self, client: aiosmtplib.SMTP, sender: str, recipient: str) -> None:
        try:
            await client.mail(sender)
            await client.rcpt(recipient)
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


async def _reset(client: aiosmtplib.SMTP) -> None:
    try:
        await client.rset()
    except (aiosmtplib.SMTPException, OSError):
        pass
