"""One profile in memory, and how events, delivery outcomes and merges change it (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.profile.domain.conventions import Conventions, order_value
from services.profile.domain.identity import normalise_email, normalise_phone
from services.profile.domain.lifecycle import is_reactivation
from shared.contracts.events import Event, EventType


def iso(ts: datetime) -> str:
    """UTC ISO text: comparable as a string whatever offset the client sent."""
    # Most values already are UTC (asyncpg returns them so): skip the conversion then.
    return ts.isoformat() if ts.tzinfo is UTC else ts.astimezone(UTC).isoformat()


@dataclass
class ProfileState:
    id: str
    workspace_id: str
    first_seen_at: datetime
    last_seen_at: datetime
    user_id: str | None = None
    email: str | None = None
    phone: str | None = None
    timezone: str | None = None
    traits: dict[str, Any] = field(default_factory=dict)
    trait_seen: dict[str, list[str]] = field(default_factory=dict)  # name -> [first, last] ISO
    event_count: int = 0
    order_count: int = 0
    gross_revenue: float = 0.0
    refund_count: int = 0
    refunded: float = 0.0
    first_order_at: datetime | None = None
    last_order_at: datetime | None = None
    reactivated_at: datetime | None = None
    last_open_at: datetime | None = None
    last_click_at: datetime | None = None
    nps_score: int | None = None
    nps_at: datetime | None = None
    # channel or "topic:<key>" -> {"subscribed": bool, "source": str, "at": ISO}
    consent: dict[str, dict[str, Any]] = field(default_factory=dict)
    # channel -> {"deliverable": bool, "reason": str | None, "at": ISO}
    addresses: dict[str, dict[str, Any]] = field(default_factory=dict)
    # token -> {"deliverable": bool, "reason": str | None, "at": ISO}
    push_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    lifecycle_stage: str | None = None
    rfm: dict[str, Any] = field(default_factory=dict)  # {"r", "f", "m", "segment"}
    predictions: dict[str, Any] = field(default_factory=dict)  # churn_risk, predicted_ltv, ...
    codes: dict[str, str] = field(default_factory=dict)  # discount code per pool (sent events)
    created: bool = False  # not in the database yet


@dataclass(frozen=True)
class Change:
    """A ProfileChange to emit: kind and data (see shared/contracts/profile.py)."""

    kind: str
    data: dict[str, Any]


def apply_event(p: ProfileState, event: Event, conv: Conventions, *,
                repeat_order: bool = False) -> list[Change]:
    """Apply one accepted event; returns the changes it caused (consent, address).
    `repeat_order`: an order whose `order_id` was counted before (domain/orders.py): still
    an event of the profile, but its orders, revenue and order times stay as they are."""
    ts = event.timestamp
    p.event_count += 1
    p.first_seen_at = min(p.first_seen_at, ts)
    p.last_seen_at = max(p.last_seen_at, ts)
    if event.user_id and not p.user_id:
        p.user_id = event.user_id
    changes: list[Change] = []
    if event.type is EventType.identify:
        changes += _apply_traits(p, dict(event.traits), ts, conv)
    tz = event.context.get("timezone")
    if isinstance(tz, str) and tz and not p.timezone:
        p.timezone = tz[:64]
    device = event.context.get("device")
    token = device.get("token") if isinstance(device, dict) else None
    if isinstance(token, str) and 8 <= len(token) <= 4096 and token not in p.push_tokens:
        p.push_tokens[token] = {"deliverable": True, "reason": None, "at": iso(ts)}
        changes.append(Change("address_changed", {"channel": "push", "deliverable": True,
                                                  "reason": "new device token"}))
    if event.type is EventType.track and event.event and not repeat_order:
        _apply_track(p, event.event, event.properties, ts, conv)
    return changes


def _apply_traits(p: ProfileState, traits: dict[str, Any], ts: datetime,
                  conv: Conventions) -> list[Change]:
    """Per trait: first/last seen; a value older than the one held never overwrites it."""
    stamp = iso(ts)
    changes: list[Change] = []
    for name, value in traits.items():
        seen = p.trait_seen.get(name)
        if seen is None:
            p.trait_seen[name] = [stamp, stamp]
        else:
            if stamp < seen[0]:
                seen[0] = stamp
            if stamp < seen[1]:
                continue  # a late, older identify: keep the newer value
            seen[1] = stamp
        p.traits[name] = value
        if name in ("email", "phone"):
            changes += _new_address(p, name, value, stamp, conv)
        elif name == "timezone" and isinstance(value, str) and value:
            p.timezone = value[:64]
    return changes


def _new_address(p: ProfileState, trait: str, value: Any, stamp: str,
                 conv: Conventions) -> list[Change]:
    """A new email or phone is an address that is deliverable until proven otherwise."""
    if trait == "email":
        address, channel = normalise_email(value), "email"
    else:
        address, channel = normalise_phone(value, conv.phone_region), "sms"
    if address == getattr(p, trait):
        return []
    setattr(p, trait, address)
    if not address:
        return []
    p.addresses[channel] = {"deliverable": True, "reason": None, "at": stamp}
    return [Change("address_changed", {"channel": channel, "deliverable": True,
                                       "reason": "new address"})]


def _apply_track(p: ProfileState, name: str, props: dict[str, Any], ts: datetime,
                 conv: Conventions) -> None:
    if name in conv.order_events:
        if is_reactivation(p.order_count, p.first_order_at, p.last_order_at, ts, conv):
            p.reactivated_at = ts
        p.order_count += 1
        p.gross_revenue += order_value(props, conv)
        p.first_order_at = min(p.first_order_at or ts, ts)
        p.last_order_at = max(p.last_order_at or ts, ts)
    elif name in conv.refund_events:
        p.refund_count += 1
        p.refunded += abs(order_value(props, conv))
    elif name in conv.nps_events:
        score = props.get(conv.nps_property)
        if isinstance(score, int | float) and not isinstance(score, bool) and 0 <= score <= 10:
            if p.nps_at is None or ts >= p.nps_at:
                p.nps_score, p.nps_at = int(score), ts


def set_consent(p: ProfileState, key: str, subscribed: bool, source: str,
                at: datetime) -> list[Change]:
    """Record a consent decision unless a newer one is already held."""
    held = p.consent.get(key)
    if held is not None and held["at"] > iso(at):
        return []
    p.consent[key] = {"subscribed": subscribed, "source": source, "at": iso(at)}
    if held is not None and held["subscribed"] == subscribed:
        return []
    data: dict[str, Any] = {"subscribed": subscribed, "source": source}
    if key.startswith("topic:"):
        data["topic"] = key.removeprefix("topic:")
    else:
        data["channel"] = key
    return [Change("consent_changed", data)]


def mark_address(p: ProfileState, channel: str, deliverable: bool, reason: str | None,
                 at: datetime, token: str | None = None) -> list[Change]:
    """Mark the channel's address deliverable or not. For push: the token named, or every
    token when the outcome does not say which one."""
    entry = {"deliverable": deliverable, "reason": reason, "at": iso(at)}
    if channel == "push":
        named = [token] if token in p.push_tokens else []
        targets = named if token else list(p.push_tokens)
        changed = [t for t in targets if p.push_tokens[t]["deliverable"] != deliverable]
        for t in targets:
            p.push_tokens[t] = dict(entry)
        if not changed:
            return []
    else:
        current = p.email if channel == "email" else p.phone
        sent_to = normalise_email(token) if channel == "email" else normalise_phone(token)
        if token and sent_to != current:
            return []  # an outcome for an address the profile no longer has
        held = p.addresses.get(channel)
        p.addresses[channel] = entry
        if held is not None and held["deliverable"] == deliverable:
            return []
    return [Change("address_changed", {"channel": channel, "deliverable": deliverable,
                                       "reason": reason})]


def reachable(p: ProfileState) -> dict[str, bool]:
    """Per channel: an address exists and is not marked undeliverable."""
    # Spelled out rather than through a helper: it runs for every event's snapshot.
    book = p.addresses
    return {"email": bool(p.email) and book.get("email", _NO_ENTRY).get("deliverable", True),
            "sms": bool(p.phone) and book.get("sms", _NO_ENTRY).get("deliverable", True),
            "push": bool(p.push_tokens) and any(t["deliverable"]
                                                for t in p.push_tokens.values())}


_NO_ENTRY: dict[str, Any] = {}


def merge_into(survivor: ProfileState, other: ProfileState) -> None:
    """Fold `other` into `survivor`: histories add up; for each value, the newer one wins."""
    s, o = survivor, other
    for name, seen in o.trait_seen.items():
        mine = s.trait_seen.get(name)
        if mine is None or seen[1] > mine[1]:
            if name in o.traits:
                s.traits[name] = o.traits[name]
        s.trait_seen[name] = [min(seen[0], mine[0]) if mine else seen[0],
                              max(seen[1], mine[1]) if mine else seen[1]]
    for name, value in o.traits.items():
        s.traits.setdefault(name, value)
    s.user_id = s.user_id or o.user_id
    newer = o.last_seen_at > s.last_seen_at
    s.email = (o.email or s.email) if newer else (s.email or o.email)
    s.phone = (o.phone or s.phone) if newer else (s.phone or o.phone)
    s.timezone = (o.timezone or s.timezone) if newer else (s.timezone or o.timezone)
    s.first_seen_at = min(s.first_seen_at, o.first_seen_at)
    s.last_seen_at = max(s.last_seen_at, o.last_seen_at)
    s.event_count += o.event_count
    s.order_count += o.order_count
    s.gross_revenue += o.gross_revenue
    s.refund_count += o.refund_count
    s.refunded += o.refunded
    s.first_order_at = _min(s.first_order_at, o.first_order_at)
    s.last_order_at = _max(s.last_order_at, o.last_order_at)
    s.reactivated_at = _max(s.reactivated_at, o.reactivated_at)
    s.last_open_at = _max(s.last_open_at, o.last_open_at)
    s.last_click_at = _max(s.last_click_at, o.last_click_at)
    if o.nps_at is not None and (s.nps_at is None or o.nps_at > s.nps_at):
        s.nps_score, s.nps_at = o.nps_score, o.nps_at
    for book_s, book_o in ((s.consent, o.consent), (s.addresses, o.addresses),
                           (s.push_tokens, o.push_tokens)):
        for key, entry in book_o.items():
            if key not in book_s or entry["at"] > book_s[key]["at"]:
                book_s[key] = entry


def _min(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)
