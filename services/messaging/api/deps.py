"""What messaging's routes get from the app: the shared aliases, and the messaging parts."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.messaging.parts import Messaging
from shared.db.outbox import OutboxRow
from shared.http.deps import EngineDep

__all__ = ["EngineDep", "MessagingDep", "publish"]


def _messaging(request: Request) -> Messaging:
    messaging: Messaging = request.app.state.messaging
    return messaging


MessagingDep = Annotated[Messaging, Depends(_messaging)]


async def publish(request: Request, ids: list[OutboxRow]) -> None:
    """Publish outbox rows right after their commit (the sweeper covers a failure)."""
    await request.app.state.runtime.publish(ids)
