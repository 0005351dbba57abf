"""Email over SMTP (aiosmtplib)."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid
from urllib.parse import urlparse

import aiosmtplib

from services.messaging.domain.render import Rendered


class PermanentFailure(Exception):
    """The provider refused for good (bad address, 5xx): don't retry."""


def build_email(*, sender: str, to: str, rendered: Rendered, message_id: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = rendered.subject or ""
    # A stable Message-ID lets receiving systems spot a duplicate if one ever slips through.
    msg["Message-ID"] = make_msgid(idstring=message_id.replace("-", ""), domain="touchpoint")
    msg["X-Touchpoint-Message"] = message_id
    msg.set_content(rendered.text or "")
    if rendered.html:
        msg.add_alternative(rendered.html, subtype="html")
    return msg


class SmtpSender:
    def __init__(self, smtp_url: str) -> None:
        url = urlparse(smtp_url)
        if url.scheme not in ("smtp", "smtps"):
            raise ValueError("TOUCHPOINT_SMTP_URL must be smtp://host:port or smtps://host:port")
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or (465 if url.scheme == "smtps" else 25)
        self.tls = url.scheme == "smtps"
        self.username, self.password = url.username, url.password

    async def send(self, message: EmailMessage) -> None:
        """Raises ConnectionError only when the message surely was not accepted (retry is
        safe); a timeout or a dropped connection mid-transaction is PermanentFailure, since
        the server may have accepted the message and a retry could deliver it twice."""
        try:
            await aiosmtplib.send(message, hostname=self.host, port=self.port, use_tls=self.tls,
                                  username=self.username, password=self.password, timeout=10)
        except aiosmtplib.SMTPConnectError as exc:  # never got to the transaction
            raise ConnectionError(f"SMTP connect failed: {type(exc).__name__}") from exc
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise PermanentFailure("recipient refused") from exc
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                raise PermanentFailure(f"SMTP {exc.code}") from exc
            raise ConnectionError(f"SMTP {exc.code}") from exc  # explicit refusal: not sent
        except (aiosmtplib.SMTPTimeoutError, aiosmtplib.SMTPServerDisconnected) as exc:
            raise PermanentFailure("outcome unknown: SMTP connection lost mid-transaction; "
                                   "not retried to avoid a duplicate") from exc
