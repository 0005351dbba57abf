"""A test send: one template rendered for a tester's address and sent through the real
provider path, its message logged and its delivery events marked `test: true` (KPIs
leave them out). It hands out no discount code: `code` writes `[pool code]`.

A test send is answered at once and never retried later. One made without a chosen
customer (the sample profile, or a snapshot without an id; logged under `NO_CUSTOMER`)
belongs to no profile, so no erasure would find it: its address and content are blanked
as soon as it is answered (docs/messaging.md)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from services.messaging.delivery import send
from services.messaging.delivery_events import send_event
from services.messaging.domain.template_check import SAMPLE_PROFILE
from services.messaging.ledger import record
from services.messaging.message import Outcome, verdict_outcome
from services.messaging.parts import Messaging
from services.messaging.prepare import prepare
from services.messaging.store import emit, load_send_state, transaction
from services.messaging.store.sends import forget_test_address, insert_test_message
from shared.contracts.delivery import DeliveryStatus
from shared.contracts.send import ADDRESS_FIELD, Channel, Recipient, SendCommand
from shared.db.outbox import OutboxRow
from shared.runtime import ServiceRuntime

NO_CUSTOMER = "test-send"  # the profile id of a test send made without a chosen customer


def test_command(*, workspace_id: str, template: str, channel: str, to: str,
                 profile: dict[str, Any], event: dict[str, Any]) -> SendCommand:
    """The send command a test send stands for (never published)."""
    key = f"test-send:{uuid.uuid4()}"
    recipient = (Recipient(push_tokens=[to]) if channel == "push"
                 else Recipient(**{ADDRESS_FIELD[channel]: to}))
    # A snapshot naming a profile is that customer's; the sample, or none, is nobody's.
    chosen = profile.get("profile_id") or profile.get("id")
    profile_id = NO_CUSTOMER if not chosen or chosen == SAMPLE_PROFILE["id"] else \
        str(chosen)[:36]
    return SendCommand(id=key, workspace_id=workspace_id, profile_id=profile_id,
                       idempotency_key=key, channel=Channel(channel), template=template,
                       to=recipient, context={"profile": profile, "event": event},
                       requested_at=datetime.now(UTC))


async def test_send(rt: ServiceRuntime, m: Messaging, cmd: SendCommand
                    ) -> tuple[dict[str, Any], list[OutboxRow]]:
    """Render, log, send and record one test message; returns its outcome and the outbox
    rows to publish."""
    address = cmd.to.email or cmd.to.phone or cmd.to.url or cmd.to.push_tokens[0]
    async with rt.engine.connect() as conn:
        state = await load_send_state(conn, [(cmd, [address])], consent=False)
    p = prepare(m, cmd, str(uuid.uuid4()), state, [address], test=True)
    now = datetime.now(UTC)
    async with transaction(rt.engine) as db:
        await insert_test_message(
            db, p.message_id, cmd.workspace_id, cmd.idempotency_key, cmd.profile_id,
            cmd.channel.value, cmd.template, p.template_version,
            "queued" if p.verdict else "sending", address[:2000])
        rows = await emit(db, rt.settings, [send_event(
            cmd, p.message_id, DeliveryStatus.queued, now, **p.event_fields())])
    outcome = verdict_outcome(p) if p.verdict else await send(
        rt, m, p, attempts=m.settings.messaging_provider_attempts)
    if outcome.status == "retrying":  # the tester is answered now: no durable retry
        outcome = Outcome(p, "failed", reason=f"not retried (a test send): {outcome.reason}"
                          [:1000], dead=outcome.dead)
    async with transaction(rt.engine) as db:
        rows += await record(db, rt, [outcome])
        if cmd.profile_id == NO_CUSTOMER:
            await forget_test_address(db, cmd.workspace_id, p.message_id, address)
    return ({"message_id": p.message_id, "status": outcome.status, "reason": outcome.reason,
             "template_version": p.template_version}, rows)

