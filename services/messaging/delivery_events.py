"""Every delivery event messaging writes, built here: the send path's (claim, outcomes,
bounces; through the contract's fast writer where it can), and those about a logged
message (tracking, unsubscribes, provider status, the retry sweeper's `unknown`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.messaging.domain.addresses import address_hash
from services.messaging.message import Outcome
from shared.contracts.delivery import DeliveryEvent, DeliveryStatus, delivery_event_json
from shared.contracts.envelope import message_key, utcnow
from shared.contracts.send import SendCommand
from shared.db.outbox import Pending


def event(cmd: SendCommand, message_id: str, status: DeliveryStatus, at: datetime, *,
          suffix: str = "", **fields: Any) -> DeliveryEvent:
    """`id` is `<message_id>:<status>[suffix]`, stable across redeliveries."""
    return DeliveryEvent(id=f"{message_id}:{status.value}{suffix}", workspace_id=cmd.workspace_id,
                         profile_id=cmd.profile_id, message_id=message_id,
                         idempotency_key=cmd.idempotency_key, status=status,
                         channel=cmd.channel, template=cmd.template, journey=cmd.journey,
                         occurred_at=at, **fields)


def send_event(cmd: SendCommand, message_id: str, status: DeliveryStatus, at: datetime, *,
               reason: str | None = None, template_version: int | None = None,
               test: bool | None = None, codes: dict[str, str] | None = None) -> Pending:
    """`store.outbox.encoded(event(...))` through the contract's fast writer, without building and
    dumping the model (two events per email: a few per cent of the CPU per email)."""
    event_id = f"{message_id}:{status.value}"
    value = delivery_event_json(
        id=event_id, workspace_id=cmd.workspace_id, produced_at=utcnow(),
        profile_id=cmd.profile_id, message_id=message_id, idempotency_key=cmd.idempotency_key,
        status=status.value, channel=cmd.channel.value, template=cmd.template,
        journey=None if cmd.journey is None else {
            k: v for k, v in cmd.journey.__dict__.items() if v is not None},
        template_version=template_version, test=test, codes=codes, reason=reason,
        occurred_at=at)
    return Pending("delivery-events", message_key(cmd.workspace_id, cmd.profile_id), event_id,
                   value)


def event_from_row(row: Any, status: DeliveryStatus, at: datetime, *, suffix: str = "",
                   **fields: Any) -> DeliveryEvent:
    """A delivery event about a logged message (tracking, unsubscribes, provider status)."""
    return DeliveryEvent(id=f"{row['id']}:{status.value}{suffix}",
                         workspace_id=row["workspace_id"], profile_id=row["profile_id"],
                         message_id=row["id"], idempotency_key=row["idempotency_key"],
                         status=status, channel=row["channel"], template=row["template"],
                         journey=row["journey"], occurred_at=at, **fields)


def outcome_events(o: Outcome, now: datetime) -> list[DeliveryEvent | Pending]:
    """The delivery events an outcome is recorded with: a `bounced` per dead address, then
    the message's own (none while it is `retrying`)."""
    p = o.prepared
    many = len(p.outbound) > 1
    # Bounces through the model, which bounds the address's length; the rest built directly.
    events: list[DeliveryEvent | Pending] = [
        event(p.cmd, p.message_id, DeliveryStatus.bounced, now, reason=why, address=addr,
              suffix=f":{address_hash('', addr)[:12]}" if many else "")
        for addr, why in o.dead]
    if o.status in ("failed", "suppressed"):
        events.append(send_event(p.cmd, p.message_id, DeliveryStatus.failed, now,
                                 reason=o.reason, **p.event_fields()))
    elif o.status in ("unknown", "expired"):
        events.append(send_event(p.cmd, p.message_id, DeliveryStatus(o.status), now,
                                 reason=o.reason, **p.event_fields()))
    elif o.status == "sent":
        events.append(send_event(p.cmd, p.message_id, DeliveryStatus.sent, now,
                                 codes=p.codes or None, **p.event_fields()))
    return events
