"""Explained outcomes on the wire: every send journey held, deferred, expired or suppressed
becomes a `DeliveryEvent` on `delivery-events` (through the outbox), with the rule, window
and count that caused it and `message_id` = the send's idempotency key."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.journey.domain.state import Decision, Instance
from shared.contracts.delivery import DeliveryEvent, DeliveryStatus
from shared.contracts.envelope import JourneyRef, message_key
from shared.db.outbox import Pending
from shared.kafka.codec import encode

# The trace's send outcomes and the delivery status each is reported as (`skipped`: no
# deliverable address, so suppressed).
STATUS = {"held": DeliveryStatus.held, "deferred": DeliveryStatus.deferred,
          "expired": DeliveryStatus.expired, "suppressed": DeliveryStatus.suppressed,
          "skipped": DeliveryStatus.suppressed}


def delivery_outcome(workspace_id: str, profile_id: str, message_id: str, status: str,
                     channel: str, template: str | None, detail: dict[str, Any],
                     reason: str | None, at: datetime, *, journey: JourneyRef | None = None,
                     broadcast: str | None = None) -> Pending:
    until = detail.get("until")
    event = DeliveryEvent(
        id=f"journey-{message_id}-{status}", workspace_id=workspace_id, profile_id=profile_id,
        message_id=message_id, idempotency_key=message_id, status=STATUS[status],
        channel=channel, template=template, journey=journey, broadcast=broadcast,
        reason=(reason or None) and reason[:500], rule=detail.get("rule"),
        window=detail.get("window"), count=detail.get("count"),
        until=datetime.fromisoformat(until) if until else None, occurred_at=at)
    return Pending("delivery-events", message_key(workspace_id, profile_id), event.id,
                   encode(event))


def outcome_message(decision: Decision, now: datetime) -> Pending | None:
    """The delivery event for a send decision that did not send, else None."""
    if decision.kind != "send" or decision.outcome not in STATUS:
        return None
    inst = decision.instance
    detail = decision.detail
    if not isinstance(inst, Instance) or not detail.get("message_id"):
        return None
    ref = JourneyRef(key=inst.journey_key, version=inst.version, stage=decision.stage,
                     step=decision.step, instance=inst.instance_key or None)
    return delivery_outcome(inst.workspace_id, inst.profile_id, detail["message_id"],
                            decision.outcome, detail.get("channel", "email"),
                            detail.get("template"), detail, decision.reason, decision.at,
                            journey=ref)
