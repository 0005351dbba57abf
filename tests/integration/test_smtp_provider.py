"""The SMTP provider retries only when the message surely was not accepted."""

import asyncio

import pytest

from services.messaging.domain.render import Rendered
from services.messaging.providers.email import PermanentFailure, SmtpSender, build_email

pytestmark = pytest.mark.integration


async def test_smtp_errors_mid_transaction_are_not_retried() -> None:
    """A dropped connection after DATA may mean the mail was accepted: no retry."""


    async def accept_then_hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hi\r\n")
        while line := await reader.readline():
            if line.upper().startswith(b"DATA"):
                writer.close()  # the server vanishes after taking the message
                return
            writer.write(b"250 ok\r\n")
            await writer.drain()

    server = await asyncio.start_server(accept_then_hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sender = SmtpSender(f"smtp://127.0.0.1:{port}")
    mail = build_email(sender="a@x.io", to="b@x.io", message_id="m-1",
                       rendered=Rendered(subject="s", html=None, text="t"))
    with pytest.raises(PermanentFailure, match="outcome unknown"):
        await sender.send(mail)
    server.close()

    closed = SmtpSender("smtp://127.0.0.1:1")  # nothing listens: safe to retry
    with pytest.raises(ConnectionError):
        await closed.send(mail)
