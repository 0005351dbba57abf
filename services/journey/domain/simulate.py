"""Run a journey on virtual time against one profile and a list of events (pure).

The same flow functions the engine uses decide; nothing is sent. Returns the trace and
the sends that would have gone out, so "why (not)?" can be asked before publishing. With
the workspace's contact policy (`Workspace`), its caps (counting the simulated sends),
quiet hours, control group and on-hold rules apply as they would live.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.journey.domain.document import JourneyDocument
from services.journey.domain.flow import (
    entry_candidates,
    on_signal,
    on_timer,
    reentry_block,
    start_instance,
)
from services.journey.domain.policy import ContactPolicy, PastSend, TemplateMeta
from services.journey.domain.signals import Signal
from services.journey.domain.state import Effects, Facts, Instance, Subject
from services.journey.domain.steps import exit_instance
from services.journey.domain.timing import zone

MAX_ROUNDS = 10_000


@dataclass(frozen=True)
class Workspace:
    """What the engine would know of the workspace: its contact policy (None: none
    saved), the templates' facts, whether the profile is in the global control group, and
    the zone for a profile without one."""

    policy: ContactPolicy | None = None
    templates: dict[str, TemplateMeta] = field(default_factory=dict)
    control: bool = False
    zone: str | None = None


@dataclass(frozen=True)
class SimEvent:
    id: str
    at: datetime
    event: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    change: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def simulate(doc: JourneyDocument, profile: dict[str, Any], timeline: list[SimEvent], *,
             start: datetime, horizon: timedelta, version: int = 0,
             workspace: Workspace | None = None) -> dict[str, Any]:
    pid = str(profile.get("profile_id") or "simulated")
    fx = Effects()
    runs: list[Instance] = []
    sent: list[tuple[str, datetime]] = []
    past: list[PastSend] = []
    ws = workspace or Workspace()

    def _facts(now: datetime) -> Facts:
        return Facts(now=now, profile=profile, tz=zone(profile.get("timezone") or ws.zone),
                     recent_sends=sent, policy=ws.policy, templates=ws.templates, past=past,
                     control=ws.control)
    end = start + horizon
    pending = sorted(timeline, key=lambda e: e.at)
    for _ in range(MAX_ROUNDS):
        timers = [(i.wake_at, n) for n, i in enumerate(runs) if i.active and i.wake_at]
        event = pending[0] if pending else None
        if timers:
            wake_at, index = min(timers)
            if (event is None or wake_at <= event.at) and wake_at <= end:
                on_timer(doc, runs[index], _facts(wake_at), fx)
                continue
        if event is None or event.at > end:
            break
        pending.pop(0)
        facts = _facts(max(event.at, start))
        signal = _signal(event, pid, profile)
        for inst in runs:
            if inst.active or inst.goal_at is None:
                on_signal(doc, inst, signal, facts, fx)
        misses: list[dict[str, Any]] = []
        for cand in entry_candidates(doc, signal, misses):
            latest = next((i for i in reversed(runs) if i.instance_key == cand.instance_key),
                          None)
            if latest is not None and latest.active and doc.reentry == "always":
                exit_instance(latest, fx, facts, "re-entered (reentry=always)")
            blocked = reentry_block(doc, latest, facts.now)
            if blocked:
                fx.note(Subject("sim", pid, doc.key, version, cand.instance_key), "entry",
                        "blocked", facts.now, stage=cand.stage.key, reason=blocked)
                continue
            runs.append(start_instance(doc, version, cand, signal, facts, fx))
        for miss in misses:
            fx.note(Subject("sim", pid, doc.key, version), "entry", "not_entered", facts.now,
                    stage=miss.pop("stage"), reason=miss.pop("reason"), detail=miss)
    trace: list[dict[str, Any]] = [
        {"at": d.at, "instance_key": d.instance.instance_key, "stage": d.stage, "step": d.step,
         "kind": d.kind, "outcome": d.outcome, "reason": d.reason, "detail": d.detail}
        for d in fx.decisions]
    sends = [{"at": t["at"], "instance_key": t["instance_key"], "stage": t["stage"],
              "step": t["step"], **t["detail"]}
             for t in trace if t["kind"] == "send" and t["outcome"] == "sent"]
    return {"trace": trace, "sends": sends, "instances": [
        {"instance_key": i.instance_key, "stage": i.stage, "step": i.step, "status": i.status,
         "exit_reason": i.exit_reason, "holdout": i.holdout, "goal_at": i.goal_at,
         "waiting_until": i.wake_at} for i in runs]}


def _signal(e: SimEvent, pid: str, profile: dict[str, Any]) -> Signal:
    if e.event is not None:
        return Signal(id=e.id, workspace_id="sim", profile_id=pid, kind="event", name=e.event,
                      at=e.at, data={"event": {"event": e.event, "type": "track",
                                               "properties": e.properties,
                                               "timestamp": e.at.isoformat()},
                                     "profile": profile})
    return Signal(id=e.id, workspace_id="sim", profile_id=pid, kind="change",
                  name=str(e.change), at=e.at,
                  data={"profile": profile, "change": {"kind": e.change, "data": e.data}})
