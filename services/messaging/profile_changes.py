"""Profile changes that matter at send time: consent, undeliverable addresses, erasure."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from services.messaging import store
from services.messaging.domain.consent import ERASED
from services.messaging.store.addresses import claim_and_mark_deliverable
from services.messaging.store.connection import one_statement
from services.messaging.store.erasure import forget, person_ids, recipient_addresses
from services.messaging.tables import inbox
from shared.contracts.profile import ChangeKind, ProfileChange
from shared.contracts.send import ADDRESS_FIELD
from shared.db import claim_new
from shared.kafka import Record
from shared.runtime import ServiceRuntime

CONSUMER = "messaging.profile-changes"
# The kinds messaging acts on (`_apply`); the others (traits, lifecycle, RFM, segments)
# change nothing here.
_ACTED_ON = frozenset({ChangeKind.consent_changed, ChangeKind.address_changed,
                       ChangeKind.erased, ChangeKind.merged})


async def handle_profile_changes(rt: ServiceRuntime, records: list[Record]) -> None:
    """One transaction per batch; the inbox makes a redelivered change a no-op.

    Consecutive "deliverable" address changes (every new customer's email) go out as one
    DELETE; any other change first sends those gathered before it, so the batch's
    statements keep the records' order. A batch of nothing but deliverable address changes
    and kinds messaging ignores (most polls: a new customer's identify brings its traits and
    its address) is one statement instead, the claim and the DELETE together, without a
    transaction around it: one round trip where BEGIN, claim, DELETE and COMMIT were four."""
    changes: list[ProfileChange] = [r.value for r in records]
    deliverable_only = [(c, _deliverable(c)) for c in changes]
    if all(target is not None or c.kind not in _ACTED_ON for c, target in deliverable_only):
        async with one_statement(rt.engine) as db:
            await claim_and_mark_deliverable(
                db, inbox, CONSUMER, [c.dedupe_id() for c in changes],
                [(c.dedupe_id(), *target) for c, target in deliverable_only
                 if target is not None])
        return
    async with rt.engine.begin() as conn:
        fresh = await claim_new(conn, inbox, CONSUMER, [c.dedupe_id() for c in changes])
        deliverable: list[tuple[str, str, str]] = []
        for change in changes:
            if change.dedupe_id() not in fresh:
                continue
            if (target := _deliverable(change)) is not None:
                deliverable.append(target)
                continue
            if deliverable:
                await store.mark_deliverable_many(conn, deliverable)
                deliverable = []
            await _apply(conn, change)
        await store.mark_deliverable_many(conn, deliverable)


def _deliverable(change: ProfileChange) -> tuple[str, str, str] | None:
    """(workspace, channel, address) when the change marks an address deliverable."""
    if change.kind != ChangeKind.address_changed or change.data.get("deliverable") is not True:
        return None
    target = _address(change)
    return None if target is None else (change.workspace_id, *target)


def _address(change: ProfileChange) -> tuple[str, str] | None:
    """The (channel, address) an address change is about: named, or the snapshot's."""
    channel = change.data.get("channel")
    address = change.data.get("address") or _snapshot_address(change, channel)
    if not isinstance(channel, str) or not isinstance(address, str):
        return None
    return channel, address


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
        case ChangeKind.address_changed:  # deliverable ones: batched by the handler
            target = _address(change)
            if target is not None and data.get("deliverable") is False:
                await store.mark_undeliverable(conn, workspace_id=ws, channel=target[0],
                                               addresses=[target[1]],
                                               reason=str(data.get("reason") or "profile"))
        case ChangeKind.erased:
            # The person is the profile and every profile ever merged into it: those the
            # change names and those this service saw merged (a merge long ago included).
            person = await person_ids(conn, ws, pid, data.get("merged_ids"))
            addresses = await recipient_addresses(conn, ws, person)
            for erased in person:
                await store.erase_profile(conn, workspace_id=ws, profile_id=erased)
                # Commands emitted before the erasure must not reach the customer any more.
                await store.record_consent(conn, workspace_id=ws, profile_id=erased,
                                           scope=ERASED, subscribed=False, source="erasure",
                                           at=change.occurred_at)
            await forget(conn, ws, person, addresses)
        case ChangeKind.merged:
            merged = [str(i) for i in data.get("merged_ids") or []]
            await store.merge_consents(conn, workspace_id=ws, into=pid, merged=merged)
        case _:
            return


def _snapshot_address(change: ProfileChange, channel: object) -> str | None:
    if change.profile is None or not isinstance(channel, str) or channel not in ADDRESS_FIELD:
        return None
    value = getattr(change.profile, ADDRESS_FIELD[channel], None)  # push: a list, no address
    return value if isinstance(value, str) else None
