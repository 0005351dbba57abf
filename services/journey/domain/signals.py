"""What moves customers: an event or a profile change, and which rules it satisfies."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.journey.domain.conditions import evaluate, seen_values
from services.journey.domain.document import EventRule, JourneyDocument
from shared.conditions import MISSING, lookup

# Changes the engine handles itself (re-keying, deletion): never signals for rules.
_BOOKKEEPING = {"merged", "erased"}


@dataclass(frozen=True)
class Signal:
    """One event (`kind="event"`, `name` = event name) or profile change (`name` = change kind).

    `data` is what conditions read: {"event": {...}, "profile": {...}, "change": {...}}.
    """

    id: str
    workspace_id: str
    profile_id: str
    kind: str
    name: str
    at: datetime
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def profile(self) -> dict[str, Any]:
        profile: dict[str, Any] = self.data.get("profile") or {}
        return profile


@dataclass(frozen=True)
class Match:
    matched: bool
    why: dict[str, Any]


def rule_matches(rule: EventRule, signal: Signal, now: datetime) -> Match:
    """Does `signal` satisfy `rule`? `why` holds what was compared, for the trace."""
    change = signal.data.get("change") or {}
    if rule.event is not None:
        if signal.kind != "event" or signal.name != rule.event:
            return Match(False, {})
        if rule.where is None:
            return Match(True, {"event": rule.event})
        ok = evaluate(rule.where, signal.data, now)
        return Match(ok, {"event": rule.event, "where": "met" if ok else "not met",
                          "seen": seen_values(rule.where, signal.data)})
    if signal.kind != "change" or signal.name in _BOOKKEEPING:
        return Match(False, {})
    if rule.condition is not None:
        ok = evaluate(rule.condition, signal.data, now)
        return Match(ok, {"condition": "met" if ok else "not met",
                          "seen": seen_values(rule.condition, signal.data)})
    expected: tuple[str, str, str | None] | None = None
    if rule.segment_entered is not None:
        expected = ("segment_entered", "segment", rule.segment_entered)
    elif rule.segment_exited is not None:
        expected = ("segment_exited", "segment", rule.segment_exited)
    elif rule.lifecycle is not None:
        expected = ("lifecycle_changed", "to", rule.lifecycle)
    elif rule.rfm_segment is not None:
        expected = ("rfm_changed", "to", rule.rfm_segment)
    if expected is None or signal.name != expected[0]:
        return Match(False, {})
    ok = change.get("data", {}).get(expected[1]) == expected[2]
    return Match(ok, {signal.name: change.get("data", {}).get(expected[1])})


def instance_key_of(doc: JourneyDocument, signal: Signal) -> str | None:
    """The instance this signal belongs to: "" without `instance_key`; None when it has none."""
    if not doc.instance_key:
        return ""
    value = lookup(signal.data, doc.instance_key)
    if value is MISSING or value is None or value == "" or isinstance(value, dict | list):
        return None
    return str(value)


def concerns(doc: JourneyDocument, signal: Signal, instance_key: str) -> bool:
    """A signal that carries an instance key acts only on that instance; one without on all."""
    key = instance_key_of(doc, signal)
    return key is None or key == "" or key == instance_key
