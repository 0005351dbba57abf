"""Sending a broadcast: freeze the audience, then hand recipients to messaging at the pace
of `throttle_per_second` and the workspace's `max_per_second`, the contact policy applied
to each one. Every recipient's send command is keyed `broadcast:<key>:<profile>`, so
sending again (a resumed broadcast, a re-claimed batch) never reaches anyone twice."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.journey import store
from services.journey.broadcasts import store as bstore
from services.journey.broadcasts.audience import audience, zones
from services.journey.broadcasts.audience import freeze as frozen
from services.journey.domain.broadcast import BroadcastDocument, classify, reason_of
from services.journey.domain.policy import ContactPolicy, local_due
from services.journey.domain.timing import zone
from services.journey.outcomes import delivery_outcome
from services.journey.policy import store as policy_store
from shared.contracts.envelope import message_key, utcnow
from shared.contracts.send import send_command_json
from shared.db.outbox import OutboxRow, Pending, queue
from shared.settings import Settings


def recipient_key(key: str, profile_id: str) -> str:
    return f"broadcast:{key}:{profile_id}"


def start_moment(doc: BroadcastDocument, now: datetime) -> datetime:
    """When sending starts (the audience is frozen): `send_at`, or now. With `local_time`
    sending starts at once and each recipient waits for their own local moment."""
    if doc.send_at is not None and doc.local_time is None:
        return max(doc.send_at, now)
    return now


async def freeze(conn: AsyncConnection, workspace_id: str, key: str, doc: BroadcastDocument,
                 now: datetime, workspace_zone: str) -> int:
    """Freeze the audience now (one statement); returns how many recipients were added.
    With `local_time`, each is due at that moment in their zone."""
    members = await audience(conn, workspace_id, doc, now)
    due: list[tuple[str, datetime]] = []
    if doc.local_time is not None:
        for raw in await zones(conn, members):
            due.append((raw, local_due(doc.send_at or now, doc.local_time,
                                       zone(raw or workspace_zone), now)))
    return await frozen(conn, members, key, now, due)


def command(workspace_id: str, key: str, doc: BroadcastDocument, profile_id: str,
            profile: dict[str, Any], now: datetime, expires_at: datetime | None) -> Pending:
    """The recipient's SendCommand, in the contract's field order (see outgoing.to_message)."""
    ident = recipient_key(key, profile_id)
    to = {"email": profile.get("email"), "phone": profile.get("phone"),
          "push_tokens": list(profile.get("push_tokens") or [])}
    value = send_command_json(
        id=ident, workspace_id=workspace_id, produced_at=utcnow(), profile_id=profile_id,
        idempotency_key=ident, channel=doc.channel, template=doc.template,
        to={k: v for k, v in to.items() if v is not None}, broadcast=key,
        expires_at=expires_at,
        context={"profile": profile, "broadcast": {"key": key, "name": doc.name}},
        requested_at=now)
    return Pending("send-commands", message_key(workspace_id, profile_id), ident, value)


async def send_due(conn: AsyncConnection, settings: Settings, outbox: Any, workspace_id: str,
                   key: str, doc: BroadcastDocument, now: datetime, limit: int,
                   workspace_zone: str = "UTC") -> tuple[int, list[OutboxRow]]:
    """Hand up to `limit` due recipients to messaging (or hold, defer, suppress them).
    Returns how many were claimed and the outbox rows to publish after commit."""
    claimed = await bstore.claim_due(conn, workspace_id, key, now, limit)
    if not claimed:
        return 0, []
    ids = [pid for pid, _ in claimed]
    await store.lock_customers(conn, [(workspace_id, pid) for pid in ids])
    loaded = (await policy_store.load_policies(conn, [workspace_id])).get(workspace_id)
    policy = loaded.policy if loaded else ContactPolicy()
    meta = (await policy_store.load_templates(conn, [workspace_id])).get(
        workspace_id, {}).get(doc.template)
    past = (await bstore.past_sends(conn, workspace_id, now - policy.lookback, ids)
            if policy.caps else {})
    snaps = await bstore.snapshots_of(conn, workspace_id, ids)
    messages: dict[str, list[Pending]] = {}
    settled: list[tuple[str, str, datetime, datetime | None, str | None]] = []
    sent: list[dict[str, Any]] = []
    for pid, held_since in claimed:
        snap, control = snaps.get(pid, ({"profile_id": pid}, False))
        tz = zone(snap.get("timezone") or workspace_zone)
        verdict = classify(doc, policy, meta, snap, past.get(pid, []), now, tz,
                           control=control, held_since=held_since, key=key)
        ident = recipient_key(key, pid)
        if verdict.sends:
            made = command(workspace_id, key, doc, pid, snap, now, verdict.expires_at)
            sent.append({"workspace_id": workspace_id, "idempotency_key": ident,
                         "profile_id": pid, "journey_key": f"broadcast:{key}",
                         "channel": doc.channel, "sent_at": now,
                         "topic": meta.topic if meta else None,
                         "category": meta.category if meta else None})
            settled.append((pid, "sent", now, held_since, None))
        else:
            made = delivery_outcome(workspace_id, pid, ident, verdict.outcome, doc.channel,
                                    doc.template, verdict.detail(), verdict.reason, now,
                                    broadcast=key)
            if verdict.outcome == "deferred":
                assert verdict.until is not None
                settled.append((pid, "pending", verdict.until, held_since or now,
                                reason_of(verdict)))
            else:
                settled.append((pid, verdict.outcome, now, held_since, reason_of(verdict)))
        messages.setdefault(made.short, []).append(made)
    await store.record_sends(conn, sent)
    await bstore.settle(conn, workspace_id, key, settled)
    rows: list[OutboxRow] = []
    for short, batch in sorted(messages.items()):
        rows += await queue(conn, outbox, batch, topic=settings.topic(short))
    return len(claimed), rows
