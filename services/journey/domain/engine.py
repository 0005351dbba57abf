"""What happens when a customer enters a stage (pure): which steps run now, where it stops."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from services.journey.domain.conditions import evaluate, lookup
from services.journey.domain.document import JourneyDocument, Send, Stage


@dataclass(frozen=True)
class Entry:
    stage: Stage
    instance_key: str


@dataclass
class Progress:
    """Sends to emit now, and the step the instance waits at (None when it finished)."""

    sends: list[tuple[str, Send]] = field(default_factory=list)
    waiting_at: str | None = None


def matching_entries(doc: JourneyDocument, data: dict[str, Any]) -> list[Entry]:
    """Stages whose event entry rule this event satisfies."""
    event_name = lookup(data, "event.event")
    out = []
    for stage in doc.stages:
        rule = stage.enter
        if rule.event is None or rule.event != event_name:
            continue
        if rule.where is not None and not evaluate(rule.where, data):
            continue
        key = lookup(data, doc.instance_key) if doc.instance_key else ""
        out.append(Entry(stage, "" if key is None or not isinstance(key, str | int | float)
                         else str(key)))
    return out


def run_from_start(stage: Stage) -> Progress:
    """Run the stage's leading sends; stop at the first step that needs time or events.

    The durable step engine (timers, wait_for, branches) builds on this: see issue 6.
    """
    progress = Progress()
    by_id = {s.id: s for s in stage.steps}
    step = stage.steps[0] if stage.steps else None
    seen: set[str] = set()
    while step is not None and step.id not in seen:
        seen.add(step.id)
        if step.send is None:
            progress.waiting_at = step.id
            return progress
        progress.sends.append((step.id, step.send))
        nxt = step.next
        if nxt == "end":
            return progress
        if nxt is None:
            index = stage.steps.index(step) + 1
            step = stage.steps[index] if index < len(stage.steps) else None
        else:
            step = by_id.get(nxt)
    return progress


def idempotency_key(*parts: object) -> str:
    """Stable key for one send of one step of one stage entry: same inputs, same key."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:48]
