"""A real SMTP server (aiosmtpd) that keeps what it receives."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.net import free_port


class Inbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[EmailMessage]:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.messages) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{len(self.messages)} of {count} emails after {timeout}s")
            await asyncio.sleep(0.05)
        return self.messages

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]

    async def wait_for_mail(self, address: str, subject: str,
                            timeout: float = 30.0) -> EmailMessage:
        """The first mail to `address` with `subject`; other tests' mail is ignored."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            for mail in self.to(address):
                if mail["Subject"] == subject:
                    return mail
            await asyncio.sleep(0.05)
        seen = [m["Subject"] for m in self.to(address)]
        raise TimeoutError(f"no {subject!r} for {address} after {timeout}s; got {seen}")


@contextmanager
def serve_smtp(handler: object) -> Iterator[str]:
    """An aiosmtpd server on a free port answering with `handler`; yields its smtp:// URL."""
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{port}"
    finally:
        controller.stop()


@contextmanager
def smtp_sink() -> Iterator[tuple[str, Inbox]]:
    """Yields (smtp://127.0.0.1:port, inbox)."""
    inbox = Inbox()
    with serve_smtp(inbox) as url:
        yield url, inbox
