"""Turn send commands into delivered messages, at most once per idempotency key.

Per polled batch:
1. claim: one transaction inserts every new command's message row (`queued`, unique on
   the idempotency key) with its `queued` delivery event. A redelivered command finds its
   row and is skipped, unless the row is still `queued` (the crash came before any
   provider call, so sending it now is safe).
2. load send-time state for the whole batch: templates, messaging's consent copy, the
   undeliverable addresses.
3. per message (customers concurrently, one customer's messages in order): consent and
   suppression check, render, then `queued -> sending` is committed right before the
   provider call, then the provider call with retries, then the outcome and its delivery
   event in one transaction.
4. publish the batch's outbox rows.

The one window left: a crash after the provider accepted and before step 3's outcome
commits. The row stays `sending` and is never sent again (no duplicate); see
docs/messaging.md for how the SMTP side of that window is narrowed.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from sqlalchemy import select, tuple_
from sqlalchemy.dialects.postgresql import insert

from services.messaging import store
from services.messaging.bootstrap import Messaging
from services.messaging.delivery import deliver_prepared, event, prepare
from services.messaging.tables import messages
from shared.contracts.delivery import DeliveryStatus
from shared.contracts.send import SendCommand
from shared.kafka import Record
from shared.runtime import ServiceRuntime


async def handle_send_commands(rt: ServiceRuntime, m: Messaging, records: list[Record]) -> None:
    unique: dict[tuple[str, str], SendCommand] = {}
    for record in records:
        cmd: SendCommand = record.value
        unique.setdefault((cmd.workspace_id, cmd.idempotency_key), cmd)
    claimed, queued_ids = await _claim(rt, list(unique.values()))
    todo = [(cmd, claimed[k]) for k, cmd in unique.items() if k in claimed]
    outbox_ids = list(queued_ids)
    failure: BaseException | None = None
    if todo:
        async with rt.engine.connect() as conn:
            state = await store.load_send_state(
                conn, template_keys={(c.workspace_id, c.template) for c, _ in todo},
                profiles={(c.workspace_id, c.profile_id) for c, _ in todo},
                addresses={(c.workspace_id, c.channel.value, store.address_hash(c.channel, a))
                           for c, _ in todo for a in _addresses(c)})
        per_customer: dict[str, list[tuple[SendCommand, str]]] = {}
        for cmd, message_id in todo:
            per_customer.setdefault(f"{cmd.workspace_id}:{cmd.profile_id}", []).append(
                (cmd, message_id))
        gate = asyncio.Semaphore(m.settings.messaging_concurrency)

        async def run(items: list[tuple[SendCommand, str]]) -> list[int]:
            ids: list[int] = []
            async with gate:
                for cmd, message_id in items:
                    prepared = prepare(m, cmd, message_id, state, _addresses(cmd))
                    ids += await deliver_prepared(rt, m, prepared)
            return ids

        results = await asyncio.gather(*(run(i) for i in per_customer.values()),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                failure = failure or result
            else:
                outbox_ids += result
    assert rt.relay is not None
    await rt.relay.publish(outbox_ids)
    if failure is not None:
        # The loop retries (transient) or replays one by one; delivered ones are no-ops then.
        raise failure


def _addresses(cmd: SendCommand) -> list[str]:
    profile = cmd.context.get("profile") or {}
    match cmd.channel.value:
        case "email":
            found = cmd.to.email or profile.get("email")
        case "sms":
            found = cmd.to.phone or profile.get("phone")
        case "push":
            return list(dict.fromkeys(cmd.to.push_tokens or profile.get("push_tokens") or []))
        case _:
            found = cmd.to.url
    return [found] if isinstance(found, str) and found else []


async def _claim(rt: ServiceRuntime, cmds: list[SendCommand]) -> tuple[dict[tuple[str, str],
                                                                             str], list[int]]:
    """Message ids to work on, by (workspace, idempotency key), and the queued events' rows."""
    if not cmds:
        return {}, []
    rows = [{"id": str(uuid.uuid4()), "workspace_id": c.workspace_id,
             "idempotency_key": c.idempotency_key, "profile_id": c.profile_id,
             "channel": c.channel.value, "template": c.template, "status": "queued",
             "recipient": ", ".join(_addresses(c))[:2000] or None,
             "journey": c.journey.model_dump(mode="json") if c.journey else None,
             "journey_key": c.journey.key if c.journey else None} for c in cmds]
    by_key = {(c.workspace_id, c.idempotency_key): c for c in cmds}
    async with rt.engine.begin() as conn:
        inserted = await conn.execute(insert(messages).values(rows).on_conflict_do_nothing()
                                      .returning(messages.c.id, messages.c.workspace_id,
                                                 messages.c.idempotency_key))
        fresh = {(r.workspace_id, r.idempotency_key): r.id for r in inserted}
        leftover = [k for k in by_key if k not in fresh]
        resumed: dict[tuple[str, str], str] = {}
        if leftover:
            again = await conn.execute(select(messages.c.id, messages.c.workspace_id,
                                              messages.c.idempotency_key).where(
                tuple_(messages.c.workspace_id, messages.c.idempotency_key).in_(leftover),
                messages.c.status == "queued"))
            resumed = {(r.workspace_id, r.idempotency_key): r.id for r in again}
        now = datetime.now(UTC)
        ids = await store.emit(conn, rt.settings, [
            event(by_key[k], mid, DeliveryStatus.queued, now) for k, mid in fresh.items()])
    return {**fresh, **resumed}, ids

