"""The message log outside the send path: what the API reads and resends, and the marks of
opens, clicks and provider status reports."""

from __future__ import annotations

from collections.abc import Sequence
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


async def message_page(conn: AsyncConnection, where: Any, columns: Sequence[str], *,
                       limit: int, offset: int) -> list[Any]:
    """`columns` of the messages `where` (see `message_filter`) says, newest first."""
    return list((await conn.execute(select(*(messages.c[c] for c in columns)).where(where)
                                    .order_by(messages.c.created_at.desc(), messages.c.id)
                                    .limit(limit).offset(offset))).mappings().all())


async def message_row(conn: AsyncConnection, workspace_id: str, message_id: str) -> Any:
    """One message's row, or None."""
    return (await conn.execute(select(messages).where(
        messages.c.workspace_id == workspace_id, messages.c.id == message_id))).mappings().first()


async def message_by_provider(conn: AsyncConnection, workspace_id: str, provider: str,
                              provider_id: str) -> Any:
    """The message a provider knows by its own id, or None."""
    return (await conn.execute(select(messages).where(
        messages.c.workspace_id == workspace_id, messages.c.provider == provider,
        messages.c.provider_message_id == provider_id))).mappings().first()


async def lock_for_resend(conn: AsyncConnection, workspace_id: str,
                          message_id: str) -> tuple[str, bool] | None:
    """A message's status and whether its send command was kept, locked; None if unknown."""
    row = (await conn.execute(select(messages.c.status, messages.c.command.is_not(None))
                              .where(messages.c.workspace_id == workspace_id,
                                     messages.c.id == message_id)
                              .with_for_update())).first()
    return None if row is None else (row[0], bool(row[1]))


async def mark_for_resend(conn: AsyncConnection, message_id: str) -> None:
    """`retrying`, due now: the retry sweeper sends it within a second."""
    await conn.execute(update(messages).where(messages.c.id == message_id).values(
        status="retrying", retry_at=func.now(), retry_since=func.now(), updated_at=func.now()))
