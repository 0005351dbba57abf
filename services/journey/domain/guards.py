"""Guardrails on a send: holdout, reachability, quiet hours, frequency caps (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.journey.domain.document import JourneyDocument
from services.journey.domain.state import Facts
from services.journey.domain.timing import iso_duration, quiet_until
from shared.contracts.send import ADDRESS_FIELD


@dataclass(frozen=True)
class Verdict:
    outcome: str  # send | held | skipped | deferred
    reason: str | None = None
    until: datetime | None = None


def reachable(profile: dict[str, Any], channel: str) -> bool:
    """An address on the channel that profile has not marked undeliverable."""
    if channel == "webhook":
        return True
    flags = profile.get("reachable") or {}
    return bool(profile.get(ADDRESS_FIELD[channel])) and flags.get(channel, True) is not False


def check_send(doc: JourneyDocument, channel: str, holdout: bool, facts: Facts) -> Verdict:
    """In order: holdout holds, no address skips, quiet hours and caps defer (never drop)."""
    if holdout:
        return Verdict("held", "holdout: the customer is in the control group")
    if not reachable(facts.profile, channel):
        return Verdict("skipped", f"unreachable: no deliverable {channel} address")
    if doc.quiet_hours and channel != "webhook":
        until = quiet_until(facts.now, facts.tz, doc.quiet_hours.start, doc.quiet_hours.end)
        if until is not None:
            return Verdict("deferred", f"quiet_hours {doc.quiet_hours.start}-"
                                       f"{doc.quiet_hours.end} in {facts.tz.key}", until)
    cap = doc.frequency_cap.get(channel)  # type: ignore[call-overload]
    if cap is not None:
        since = facts.now - cap.per
        recent = sorted(at for ch, at in facts.recent_sends if ch == channel and at > since)
        if len(recent) >= cap.max:
            # Free again when the oldest send that keeps the count at the cap leaves the window.
            until = recent[len(recent) - cap.max] + cap.per
            return Verdict("deferred", f"frequency_cap {channel}: {len(recent)} sent in the "
                                       f"last {iso_duration(cap.per)} (max {cap.max})", until)
    return Verdict("send")
