"""A person's erasure: who the person is (the profile and every profile merged into it),
the personal data of their messages, and what else links a row to them."""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.messaging.domain.consent import ERASED
from services.messaging.tables import codes, consents, messages, profile_aliases

# What an erased message keeps: its log line for statistics, none of its personal data.
_ERASED: dict[str, Any] = {"recipient": None, "subject": None, "body": None, "content": None,
                           "command": None}


async def erase_profile(conn: AsyncConnection, *, workspace_id: str, profile_id: str) -> int:
    """Drop the personal data of a profile's messages; keep the log lines for statistics."""
    result = await conn.execute(update(messages).where(
        messages.c.workspace_id == workspace_id, messages.c.profile_id == profile_id,
        messages.c.erased_at.is_(None)).values(**_ERASED, erased_at=func.now()))
    return result.rowcount


async def person_ids(conn: AsyncConnection, workspace_id: str, profile_id: str,
                     merged_ids: object) -> list[str]:
    """The profile, those the change names as merged into it, and those this service saw
    merged into it (a merge long ago included)."""
    named = [str(i) for i in merged_ids] if isinstance(merged_ids, list) else []
    # merge_consents keeps every alias pointing at the end of its chain of merges.
    aliases = (await conn.execute(select(profile_aliases.c.profile_id).where(
        profile_aliases.c.workspace_id == workspace_id,
        profile_aliases.c.merged_into.in_([profile_id, *named])))).scalars().all()
    return list(dict.fromkeys([profile_id, *named, *aliases]))


async def recipient_addresses(conn: AsyncConnection, workspace_id: str,
                              person: list[str]) -> list[str]:
    """The addresses the person's messages went to (read before they are erased)."""
    return list((await conn.execute(select(messages.c.recipient).distinct().where(
        messages.c.workspace_id == workspace_id, messages.c.profile_id.in_(person),
        messages.c.recipient.is_not(None)))).scalars().all())


async def forget(conn: AsyncConnection, workspace_id: str, person: list[str],
                 addresses: list[str]) -> None:
    """What else links a row to the person: messages to their addresses under another id
    (test sends), consents other than the erasure marker, merge aliases, and the discount
    codes they were given (kept as used, for accounting, under an id that names nobody)."""
    if addresses:
        await conn.execute(update(messages).where(
            messages.c.workspace_id == workspace_id, messages.c.recipient.in_(addresses),
            messages.c.erased_at.is_(None)).values(**_ERASED, erased_at=func.now()))
    for address in addresses:  # a provider's reply may quote the address in `error`
        await conn.execute(update(messages).where(
            messages.c.workspace_id == workspace_id,
            func.strpos(func.lower(messages.c.error), address.lower()) > 0).values(
            error=func.regexp_replace(messages.c.error, re.escape(address), "[erased]", "gi")))
    await conn.execute(delete(consents).where(
        consents.c.workspace_id == workspace_id, consents.c.profile_id.in_(person),
        consents.c.scope != ERASED))
    await conn.execute(delete(profile_aliases).where(
        profile_aliases.c.workspace_id == workspace_id,
        profile_aliases.c.profile_id.in_(person) | profile_aliases.c.merged_into.in_(person)))
    given = (await conn.execute(select(codes.c.pool, codes.c.code).where(
        codes.c.workspace_id == workspace_id, codes.c.profile_id.in_(person)))).all()
    for pool, code in given:
        await conn.execute(update(codes).where(
            codes.c.workspace_id == workspace_id, codes.c.pool == pool, codes.c.code == code)
            .values(profile_id=f"erased:{uuid.uuid4().hex[:29]}", message_id=None))
