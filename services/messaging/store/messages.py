"""The message log outside the send path: the API's filter and the marks of opens, clicks
and provider status reports."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.messaging.tables import messages


def message_filter(workspace_id: str, *, profile_id: str | None, journey: str | None,
                   status: str | None, channel: str | None) -> Any:
    conditions = [messages.c.workspace_id == workspace_id]
    if profile_id:
        conditions.append(messages.c.profile_id == profile_id)
    if journey:
        conditions.append(messages.c.journey_key == journey)
    if status:
        conditions.append(messages.c.status == status)
    if channel:
        conditions.append(messages.c.channel == channel)
    return and_(*conditions)


async def touch_message(conn: AsyncConnection, *, workspace_id: str, message_id: str,
                        column: str, status: str | None = None) -> tuple[Any, bool]:
    """Set `column` to now if unset (and the status, if given). Returns the row (None when
    unknown) and whether this was the first time."""
    values: dict[str, Any] = {column: func.coalesce(messages.c[column], func.now()),
                              "updated_at": func.now()}
    if status:
        values["status"] = status
    before = (await conn.execute(select(messages.c[column]).where(
        messages.c.workspace_id == workspace_id, messages.c.id == message_id)
        .with_for_update())).first()
    if before is None:
        return None, False
    row = (await conn.execute(update(messages).where(messages.c.id == message_id)
                              .values(**values).returning(messages))).mappings().one()
    return row, before[0] is None
