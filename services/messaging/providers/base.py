"""The one small interface every provider implements, and the errors it may raise.

    ProviderError
    +-- TransientFailure    may succeed later (connection refused, 429, 5xx): retried
    +-- PermanentFailure    never will (4xx, refused recipient): failed at once
        +-- OutcomeUnknown  the provider may have accepted it: not retried (no double send)
        +-- InvalidAddress  the address is dead (hard bounce, invalid push token): marked
                            undeliverable and reported as `bounced`

A new provider is one module: a pydantic `Settings` and `Secrets` model, and a class with
`async send(message) -> provider message id | None` and `async close()`, registered in
`providers/registry.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class ProviderError(Exception):
    """Base of what a provider raises; the message is the reason recorded on the message."""


class TransientFailure(ProviderError):
    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class PermanentFailure(ProviderError):
    pass


class OutcomeUnknown(PermanentFailure):
    pass


class InvalidAddress(PermanentFailure):
    pass


@dataclass(frozen=True)
class Outbound:
    """One rendered message for one address."""

    message_id: str
    workspace_id: str
    to: str
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)  # push / webhook payload extras


class Provider(Protocol):
    async def send(self, message: Outbound) -> str | None:
        """Deliver once; return the provider's message id if it gives one. Raises only
        ProviderError subclasses."""

    async def close(self) -> None:
        """Release connections."""
