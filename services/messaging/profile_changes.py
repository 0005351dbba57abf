"""Profile changes that matter at send time: consent, undeliverable addresses, erasure."""

from __future__ import annotations

import re
import uuid

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.messaging import store
from services.messaging.domain.consent import ERASED
from services.messaging.tables import codes, consents, inbox, messages, profile_aliases
from shared.contracts.profile import ChangeKind, ProfileChange
from shared.contracts.send import ADDRESS_FIELD
from shared.db import claim_new
from shared.kafka import Record
from shared.runtime import ServiceRuntime

CONSUMER = "messaging.profile-changes"
async def handle_profile_changes(rt: ServiceRuntime, records: list[Record]) -> None:
    """One transaction per batch; the inbox makes a redelivered change a no-op."""
    changes: list[ProfileChange] = [r.value for r in records]
    async with rt.engine.begin() as conn:
        fresh = await claim_new(conn, inbox, CONSUMER, [c.dedupe_id() for c in changes])
        for change in changes:
            if change.dedupe_id() in fresh:
                await _apply(conn, change)


async def _apply(conn: AsyncConnection, change: ProfileChange) -> None:
    ws, pid, data = change.workspace_id, change.profile_id, change.data
    match change.kind:
        case ChangeKind.consent_changed:
            scope = (f"topic:{data['topic']}" if data.get("topic") else data.get("channel"))
            if isinstance(scope, str) and isinstance(data.get("subscribed"), bool):
                await store.record_consent(conn, workspace_id=ws, profile_id=pid,
                                           scope=scope, subscribed=data["subscribed"],
                                           source=str(data.get("source") or "profile"),
                                           at=change.occurred_at)
        case ChangeKind.address_changed:
            channel = data.get("channel")
            address = data.get("address") or _snapshot_address(change, channel)
            if not isinstance(channel, str) or not isinstance(address, str):
                return
            if data.get("deliverable") is False:
                await store.mark_undeliverable(conn, workspace_id=ws, channel=channel,
                                               addresses=[address],
                                               reason=str(data.get("reason") or "profile"))
            elif data.get("deliverable") is True:
                await store.mark_deliverable(conn, workspace_id=ws, channel=channel,
                                             address=address)
        case ChangeKind.erased:
            # The person is the profile and every profile ever merged into it: those the
            # change names and those this service saw merged (a merge long ago included).
            person = await _person_ids(conn, ws, pid, data.get("merged_ids"))
            addresses = await _addresses(conn, ws, person)
            for erased in person:
                await store.erase_profile(conn, workspace_id=ws, profile_id=erased)
                # Commands emitted before the erasure must not reach the customer any more.
                await store.record_consent(conn, workspace_id=ws, profile_id=erased,
                                           scope=ERASED, subscribed=False, source="erasure",
                                           at=change.occurred_at)
            await _forget(conn, ws, person, addresses)
        case ChangeKind.merged:
            merged = [str(i) for i in data.get("merged_ids") or []]
            await store.merge_consents(conn, workspace_id=ws, into=pid, merged=merged)
        case _:
            return


async def _person_ids(conn: AsyncConnection, workspace_id: str, profile_id: str,
                      merged_ids: object) -> list[str]:
    named = [str(i) for i in merged_ids] if isinstance(merged_ids, list) else []
    # merge_consents keeps every alias pointing at the end of its chain of merges.
    aliases = (await conn.execute(select(profile_aliases.c.profile_id).where(
        profile_aliases.c.workspace_id == workspace_id,
        profile_aliases.c.merged_into.in_([profile_id, *named])))).scalars().all()
    return list(dict.fromkeys([profile_id, *named, *aliases]))


async def _addresses(conn: AsyncConnection, workspace_id: str, person: list[str]) -> list[str]:
    """The addresses the person's messages went to (before they are erased)."""
    return list((await conn.execute(select(messages.c.recipient).distinct().where(
        messages.c.workspace_id == workspace_id, messages.c.profile_id.in_(person),
        messages.c.recipient.is_not(None)))).scalars().all())


async def _forget(conn: AsyncConnection, workspace_id: str, person: list[str],
                  addresses: list[str]) -> None:
    """What else links a row to the person: messages to their addresses under another id
    (test sends), consents other than the erasure marker, merge aliases, and the discount
    codes they were given (kept as used, for accounting, under an id that names nobody)."""
    if addresses:
        await conn.execute(update(messages).where(
            messages.c.workspace_id == workspace_id, messages.c.recipient.in_(addresses),
            messages.c.erased_at.is_(None)).values(
            recipient=None, subject=None, body=None, content=None, command=None,
            erased_at=func.now()))
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


def _snapshot_address(change: ProfileChange, channel: object) -> str | None:
    if change.profile is None or not isinstance(channel, str) or channel not in ADDRESS_FIELD:
        return None
    value = getattr(change.profile, ADDRESS_FIELD[channel], None)  # push: a list, no address
    return value if isinstance(value, str) else None
