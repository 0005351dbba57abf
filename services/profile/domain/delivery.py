"""What a delivery outcome means for a profile, and its name as a profile event (pure).

Names follow Segment's email spec ("Email Opened", "Email Link Clicked", "Email Bounced",
"Email Marked as Spam", "Unsubscribed"), with the channel's label for SMS and push.
"""

from __future__ import annotations

from typing import Any

from services.profile.domain.state import Change, ProfileState, mark_address, set_consent
from shared.contracts.delivery import DeliveryEvent, DeliveryStatus
from shared.contracts.send import CHANNEL_LABEL

_VERB = {
    DeliveryStatus.queued: "Queued", DeliveryStatus.sent: "Sent",
    DeliveryStatus.delivered: "Delivered", DeliveryStatus.failed: "Failed",
    DeliveryStatus.bounced: "Bounced", DeliveryStatus.opened: "Opened",
    DeliveryStatus.clicked: "Link Clicked", DeliveryStatus.complained: "Marked as Spam",
    DeliveryStatus.unknown: "Outcome Unknown", DeliveryStatus.held: "Held",
    DeliveryStatus.deferred: "Deferred", DeliveryStatus.expired: "Expired",
    DeliveryStatus.suppressed: "Suppressed",
}


def event_name(d: DeliveryEvent) -> str:
    if d.status is DeliveryStatus.unsubscribed:
        return "Unsubscribed"
    return f"{CHANNEL_LABEL[d.channel.value]} {_VERB[d.status]}"


def event_properties(d: DeliveryEvent) -> dict[str, Any]:
    props: dict[str, Any] = {"message_id": d.message_id, "channel": d.channel.value,
                             "status": d.status.value}
    if d.template:
        props["template"] = d.template
    if d.journey:
        props["journey"] = d.journey.model_dump(exclude_none=True)
    if d.broadcast:
        props["broadcast"] = d.broadcast
    if d.test:
        props["test"] = True
    if d.reason:
        props["reason"] = d.reason
    if d.url:
        props["url"] = d.url
    if d.rule:  # journey's held/suppressed outcomes: the KPI rebuild finds the control group
        props["rule"] = d.rule
    return props


def _undeliverable(d: DeliveryEvent) -> bool:
    """Hard bounces, and failures that say the address or token itself is bad."""
    reason = (d.reason or "").lower()
    if d.status is DeliveryStatus.bounced:
        return not any(w in reason for w in ("soft", "transient", "mailbox full", "try again"))
    if d.status is DeliveryStatus.failed:
        return ("invalid" in reason or "unregistered" in reason or "not registered" in reason) \
            and any(w in reason for w in ("token", "address", "number", "recipient"))
    return False


def apply_delivery(p: ProfileState, d: DeliveryEvent) -> list[Change]:
    at, channel = d.occurred_at, d.channel.value
    if d.status is DeliveryStatus.opened:
        p.last_open_at = max(p.last_open_at or at, at)
    elif d.status is DeliveryStatus.clicked:
        p.last_click_at = max(p.last_click_at or at, at)
        p.last_open_at = max(p.last_open_at or at, at)  # a click implies the open
    elif d.status is DeliveryStatus.unsubscribed and channel != "webhook":
        return set_consent(p, channel, False, f"unsubscribe:{d.template or 'message'}", at)
    elif d.status is DeliveryStatus.complained and channel != "webhook":
        return set_consent(p, channel, False, "spam complaint", at)
    elif d.status is DeliveryStatus.sent and d.codes and not d.test:
        p.codes.update(d.codes)  # kept as `profile.codes.<pool>`; a test send's are not real
    elif _undeliverable(d) and channel != "webhook":
        return mark_address(p, channel, False, d.reason or d.status.value, at, token=d.address)
    return []
