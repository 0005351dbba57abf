"""One message on the send path: what `prepare` made of its command, and what came of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.messaging.providers.base import Outbound
from shared.contracts.send import SendCommand

# The reason of a message whose provider call a crash interrupted.
UNKNOWN = ("outcome unknown: the service stopped during the provider call; not sent again "
           "automatically (an operator may resend it, at the risk of a duplicate)")


@dataclass
class Prepared:
    cmd: SendCommand
    message_id: str
    verdict: tuple[str, str] | None = None  # (status, reason) when it must not be sent
    outbound: list[Outbound] = field(default_factory=list)
    content: dict[str, Any] | None = None
    addresses: list[str] = field(default_factory=list)  # the recipient's, live or not
    template_version: int | None = None
    pools: list[str] = field(default_factory=list)  # code pools the template asks for
    codes: dict[str, str] | None = None  # the codes it got (see codes.hand_out_codes)
    test: bool | None = None  # a test send (POST /v1/templates/{key}/test-send)
    tries: int = 0  # durable retry rounds already failed (the retry sweeper's messages)
    retry_since: datetime | None = None  # the first transient failure, when retrying

    def event_fields(self) -> dict[str, Any]:
        """What every delivery event of this message carries besides the command's."""
        return {"template_version": self.template_version, "test": self.test}


@dataclass
class Outcome:
    prepared: Prepared
    status: str  # sent | bounced | failed | suppressed | unknown | retrying | expired
    reason: str | None = None
    provider: str | None = None
    provider_id: str | None = None
    dead: list[tuple[str, str]] = field(default_factory=list)  # (address, why)
    retry_at: datetime | None = None  # retrying: when
    retry_since: datetime | None = None  # retrying: the first transient failure


def verdict_outcome(p: Prepared) -> Outcome:
    """The outcome of a message refused before any provider call."""
    assert p.verdict is not None
    return Outcome(p, p.verdict[0], p.verdict[1])
