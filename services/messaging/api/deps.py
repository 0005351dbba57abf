"""What the routes get from the app: the runtime's engine and the messaging bootstrap."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from services.messaging.bootstrap import Messaging
from shared.db.outbox import OutboxRow


def _engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.runtime.engine
    return engine


def _messaging(request: Request) -> Messaging:
    messaging: Messaging = request.app.state.messaging
    return messaging


EngineDep = Annotated[AsyncEngine, Depends(_engine)]
MessagingDep = Annotated[Messaging, Depends(_messaging)]


async def publish(request: Request, ids: list[OutboxRow]) -> None:
    """Publish outbox rows right after their commit (the sweeper covers a failure)."""
    relay = request.app.state.runtime.relay
    if relay is not None and ids:
        await relay.publish(ids)
