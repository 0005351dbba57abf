"""Engine decisions in plain words, for a customer's "why?" trace."""

from __future__ import annotations

from typing import Any

_KINDS = {
    "enter": "entered the journey", "stage": "stage", "send": "message", "branch": "branch",
    "split": "split", "wait": "wait", "wait_for": "waited for an event", "exit": "left the "
    "journey", "goal": "goal", "entry": "entry rule", "update_profile": "profile update",
}


def sentence(entry: dict[str, Any]) -> str:
    """One decision as a sentence: what happened, where, and why."""
    kind = str(entry.get("kind") or "")
    outcome = str(entry.get("outcome") or "")
    where = " / ".join(str(p) for p in (entry.get("stage"), entry.get("step")) if p)
    what = _KINDS.get(kind, kind.replace("_", " "))
    said = outcome.replace("_", " ")
    text = f"{what}: {said}" if outcome and said not in (kind, what) else what
    if where:
        text += f" (at {where})"
    reason = entry.get("reason")
    if reason:
        text += f", because {reason}"
    return text[0].upper() + text[1:] if text else text
