"""Messaging's database operations. Functions take a connection; callers own transactions."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, literal, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.messaging.tables import (
    consents,
    messages,
    outbox,
    profile_aliases,
    templates,
    undeliverable,
)
from shared.contracts.delivery import DeliveryEvent, DeliveryStatus
from shared.contracts.envelope import message_key
from shared.kafka.codec import encode, headers_for
from shared.settings import Settings


def address_hash(channel: str, address: str) -> str:
    normal = address.strip().lower() if channel == "email" else address.strip()
    return hashlib.sha256(normal.encode()).hexdigest()


# executemany form: compiled once and cached. `add_to_outbox` builds a multi-VALUES
# statement, compiled anew for every batch size, which cost more than the rows
# themselves for the 64-500 events of a wave or a claimed batch.
_OUTBOX = insert(outbox).returning(outbox.c.id)


async def emit(conn: AsyncConnection, settings: Settings,
               events: Sequence[DeliveryEvent]) -> list[int]:
    """Delivery events into the outbox, in the caller's transaction (the same rows as
    `shared.db.add_to_outbox` writes)."""
    if not events:
        return []
    topic = settings.topic("delivery-events")
    rows = [{"topic": topic, "key": message_key(e.workspace_id, e.profile_id),
             "value": encode(e),
             "headers": [[k, v.decode()] for k, v in headers_for(e, "delivery-events")]}
            for e in events]
    return list((await conn.execute(_OUTBOX, rows)).scalars())


@dataclass
class SendState:
    """What send-time checks need, loaded for a whole batch in three queries."""

    templates: dict[tuple[str, str], Any] = field(default_factory=dict)
    consent: dict[tuple[str, str], dict[str, bool]] = field(default_factory=dict)
    dead: set[tuple[str, str, str]] = field(default_factory=set)  # ws, channel, address hash


async def load_send_state(conn: AsyncConnection, *, template_keys: set[tuple[str, str]],
                          profiles: set[tuple[str, str]],
                          addresses: set[tuple[str, str, str]]) -> SendState:
    state = SendState()
    if template_keys:
        rows = await conn.execute(select(templates).where(
            tuple_(templates.c.workspace_id, templates.c.key).in_(list(template_keys))))
        state.templates = {(r["workspace_id"], r["key"]): r for r in rows.mappings()}
    if profiles:
        rows = await conn.execute(select(consents).where(
            tuple_(consents.c.workspace_id, consents.c.profile_id).in_(list(profiles))))
        for r in rows.mappings():
            state.consent.setdefault((r["workspace_id"], r["profile_id"]), {})[r["scope"]] = \
                r["subscribed"]
    if addresses:
        rows = await conn.execute(select(undeliverable.c.workspace_id, undeliverable.c.channel,
                                         undeliverable.c.address_hash).where(
            tuple_(undeliverable.c.workspace_id, undeliverable.c.channel,
                   undeliverable.c.address_hash).in_(list(addresses))))
        state.dead = {(r[0], r[1], r[2]) for r in rows}
    return state


async def mark_sending(conn: AsyncConnection, message_ids: list[str]) -> set[str]:
    """queued -> sending; returns the ids this worker got (not those another one took)."""
    if not message_ids:
        return set()
    result = await conn.execute(update(messages).where(
        messages.c.id.in_(message_ids), messages.c.status == "queued").values(
        status="sending", updated_at=func.now()).returning(messages.c.id))
    return set(result.scalars())


async def record_consent(conn: AsyncConnection, *, workspace_id: str, profile_id: str,
                         scope: str, subscribed: bool, source: str, at: datetime) -> None:
    """Upsert; an older change never overwrites a newer one (changes can arrive late). A
    profile already merged into another passes the change on to the survivor."""
    survivor = (await conn.execute(select(profile_aliases.c.merged_into).where(
        profile_aliases.c.workspace_id == workspace_id,
        profile_aliases.c.profile_id == profile_id))).scalar()
    rows = [{"workspace_id": workspace_id, "profile_id": p, "scope": scope[:120],
             "subscribed": subscribed, "source": source[:100], "changed_at": at}
            for p in filter(None, (profile_id, survivor))]
    stmt = insert(consents).values(rows)
    await conn.execute(stmt.on_conflict_do_update(
        index_elements=[consents.c.workspace_id, consents.c.profile_id, consents.c.scope],
        set_={"subscribed": stmt.excluded.subscribed, "source": stmt.excluded.source,
              "changed_at": stmt.excluded.changed_at},
        where=consents.c.changed_at <= stmt.excluded.changed_at))


async def mark_undeliverable(conn: AsyncConnection, *, workspace_id: str, channel: str,
                             addresses: Iterable[str], reason: str) -> None:
    rows = [{"workspace_id": workspace_id, "channel": channel,
             "address_hash": address_hash(channel, a), "reason": reason[:300]}
            for a in dict.fromkeys(addresses)]
    if rows:
        await conn.execute(insert(undeliverable).values(rows).on_conflict_do_nothing())


async def mark_deliverable(conn: AsyncConnection, *, workspace_id: str, channel: str,
                           address: str) -> None:
    await conn.execute(undeliverable.delete().where(
        undeliverable.c.workspace_id == workspace_id, undeliverable.c.channel == channel,
        undeliverable.c.address_hash == address_hash(channel, address)))


async def merge_consents(conn: AsyncConnection, *, workspace_id: str, into: str,
                         merged: list[str]) -> None:
    """Unsubscribes recorded on merged profiles keep counting for the surviving one, also
    those that arrive later for a merged id (see `record_consent`)."""
    if not merged:
        return
    await conn.execute(insert(profile_aliases).values([
        {"workspace_id": workspace_id, "profile_id": m, "merged_into": into} for m in merged
    ]).on_conflict_do_update(index_elements=[profile_aliases.c.workspace_id,
                                             profile_aliases.c.profile_id],
                             set_={"merged_into": into}))
    await conn.execute(update(profile_aliases).where(  # a chain of merges ends at `into`
        profile_aliases.c.workspace_id == workspace_id,
        profile_aliases.c.merged_into.in_(merged)).values(merged_into=into))
    source = select(consents.c.workspace_id, literal(into, consents.c.profile_id.type),
                    consents.c.scope, consents.c.subscribed, consents.c.source,
                    consents.c.changed_at).where(
        consents.c.workspace_id == workspace_id, consents.c.profile_id.in_(merged))
    stmt = insert(consents).from_select(
        ["workspace_id", "profile_id", "scope", "subscribed", "source", "changed_at"], source)
    await conn.execute(stmt.on_conflict_do_update(
        index_elements=[consents.c.workspace_id, consents.c.profile_id, consents.c.scope],
        set_={"subscribed": stmt.excluded.subscribed, "source": stmt.excluded.source,
              "changed_at": stmt.excluded.changed_at},
        where=consents.c.changed_at < stmt.excluded.changed_at))


async def erase_profile(conn: AsyncConnection, *, workspace_id: str, profile_id: str) -> int:
    """Drop the personal data of a profile's messages; keep the log lines for statistics."""
    result = await conn.execute(update(messages).where(
        messages.c.workspace_id == workspace_id, messages.c.profile_id == profile_id,
        messages.c.erased_at.is_(None)).values(
        recipient=None, subject=None, body=None, content=None, erased_at=func.now()))
    return result.rowcount


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




def event_from_row(row: Any, status: DeliveryStatus, at: datetime, *, suffix: str = "",
                   **fields: Any) -> DeliveryEvent:
    """A delivery event about a logged message (tracking, unsubscribes, provider status)."""
    return DeliveryEvent(id=f"{row['id']}:{status.value}{suffix}",
                         workspace_id=row["workspace_id"], profile_id=row["profile_id"],
                         message_id=row["id"], idempotency_key=row["idempotency_key"],
                         status=status, channel=row["channel"], template=row["template"],
                         journey=row["journey"], occurred_at=at, **fields)


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
