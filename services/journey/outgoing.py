"""Turn the engine's outgoing effects into topic messages (all through the outbox).

- `send` and `webhook` steps become `SendCommand`s on `send-commands`; a webhook is channel
  `webhook` with `to.url` (messaging signs it, blocks private addresses, retries, times out).
- `update_profile` becomes an `identify` `Event` on `events` with a deterministic id, which
  profile applies like any identify call.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.journey.domain.state import Outgoing
from services.journey.domain.steps import message_key as send_message_key
from shared.contracts.envelope import message_key, utcnow
from shared.contracts.events import Event, EventType
from shared.contracts.send import send_command_json
from shared.db.outbox import Pending
from shared.kafka.codec import encode


def send_key(out: Outgoing) -> str:
    """Derived from (journey version, customer's instance, stage entry, step, step count):
    a redelivered event or a re-run timer yields the same key, so messaging sends once."""
    return send_message_key(out.instance, out.stage, out.step, out.seq)


def to_message(out: Outgoing, key: str, profile: dict[str, Any], now: datetime
               ) -> Pending | None:
    """The topic message for `out`, or None when it cannot be addressed.
    `key` is `send_key(out)`."""
    i = out.instance
    journey = {"key": i.journey_key, "version": i.version, "stage": out.stage,
               "step": out.step, "instance": i.instance_key or None, "instance_id": i.id,
               "holdout": i.holdout}
    if out.traits is not None:
        user_id = profile.get("user_id")
        if not user_id:
            return None
        event = Event(id=f"journey-{key}", workspace_id=i.workspace_id, type=EventType.identify,
                      user_id=str(user_id), traits=out.traits, timestamp=now, received_at=now,
                      context={"journey": journey})
        return Pending("events", message_key(i.workspace_id, str(user_id)), event.id,
                       encode(event))
    channel = out.send.channel if out.send else "webhook"
    template = out.send.template if out.send else out.webhook.template  # type: ignore[union-attr]
    context: dict[str, Any] = {"profile": profile, "event": out.event, "journey": journey}
    if out.webhook is not None:
        to: dict[str, Any] = {"push_tokens": [], "url": out.webhook.url}
        context["webhook"] = {"url": out.webhook.url,
                              "timeout_s": out.webhook.timeout.total_seconds()}
    else:
        to = {"email": profile.get("email"), "phone": profile.get("phone"),
              "push_tokens": list(profile.get("push_tokens") or [])}
        to = {k: v for k, v in to.items() if v is not None}
    ref = {"key": i.journey_key, "version": i.version, "stage": out.stage, "step": out.step}
    if i.instance_key:
        ref["instance"] = i.instance_key
    # Written by the contract's fast writer (building the model and dumping it cost more
    # than everything else per send).
    return Pending("send-commands", message_key(i.workspace_id, i.profile_id), key,
                   send_command_json(id=key, workspace_id=i.workspace_id, produced_at=utcnow(),
                                     profile_id=i.profile_id, idempotency_key=key,
                                     channel=channel, template=template, to=to, journey=ref,
                                     expires_at=out.expires_at, context=context,
                                     requested_at=now))
