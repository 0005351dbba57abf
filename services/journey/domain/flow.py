"""How signals and timers move an instance: exits, goals, `wait_for`, stage moves (pure).

Order for a signal on an active instance: exit rules first (an interrupting exit wins
over everything), then the goal, then a `wait_for` the instance waits at, then a move to
a later stage whose entry rule matches. Stage moves go forward only, so rules can't
bounce a customer back and forth.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.journey.domain.conditions import evaluate
from services.journey.domain.document import JourneyDocument, Stage
from services.journey.domain.ids import bucket
from services.journey.domain.signals import Signal, concerns, instance_key_of, rule_matches
from services.journey.domain.state import Effects, Facts, Instance
from services.journey.domain.steps import complete, exit_instance, run_flow
from services.journey.domain.timing import iso_duration
from services.journey.domain.uplift import goal_value

GOAL_WINDOW_DEFAULT = timedelta(days=365)  # a goal without `within` still needs an end


@dataclass(frozen=True)
class Candidate:
    """A stage a customer outside the journey may start in, because of `signal`."""

    stage: Stage
    instance_key: str
    why: dict[str, Any]


def entry_candidates(doc: JourneyDocument, signal: Signal, fx_skipped: list[dict[str, Any]]
                     ) -> list[Candidate]:
    """Entry-point stages this signal's rule satisfies (first one wins per instance key).

    Near misses (the event matched but `where` did not, or the instance key was missing)
    go to `fx_skipped` so the trace can say why a customer did not enter.
    """
    names = doc.entry_events
    if names is not None and (signal.kind != "event" or signal.name not in names):
        return []
    for stage in doc.entry_points():
        match = rule_matches(stage.enter, signal, signal.at)
        if not match.matched:
            if match.why:
                fx_skipped.append({"stage": stage.key, "reason": "entry rule not met",
                                   **match.why})
            continue
        key = instance_key_of(doc, signal)
        if key is None:
            fx_skipped.append({"stage": stage.key, "reason": f"no value at instance_key "
                                                             f"{doc.instance_key}", **match.why})
            continue
        return [Candidate(stage, key, match.why)]
    return []


def reentry_block(doc: JourneyDocument, latest: Instance | None, now: datetime) -> str | None:
    """Why the entry policy refuses a new instance (None: allowed). `latest` is the newest
    instance of this journey for the customer and instance key, on any version."""
    if latest is None:
        return None
    if doc.reentry == "once":
        return "reentry=once: the customer was already in this journey"
    if latest.active and doc.reentry == "after_exit":
        return "reentry=after_exit: the customer is still in this journey"
    if doc.reentry_cooldown is not None:
        since = latest.ended_at or latest.entered_at
        if now < since + doc.reentry_cooldown:
            return f"reentry_cooldown {iso_duration(doc.reentry_cooldown)}: last entry or " \
                   f"exit at {since.isoformat()}"
    return None


def start_instance(doc: JourneyDocument, version: int, cand: Candidate, signal: Signal,
                   facts: Facts, fx: Effects) -> Instance:
    """A new instance in `cand.stage`; holdout is decided once, deterministically."""
    now = facts.now
    inst = Instance(
        id=str(uuid.uuid4()), workspace_id=signal.workspace_id, journey_key=doc.key,
        version=version, profile_id=signal.profile_id, instance_key=cand.instance_key,
        entry_id=signal.id, stage=cand.stage.key, status="active",
        holdout=bucket("holdout", doc.key, signal.profile_id) < doc.holdout_percent,
        entered_at=now, stage_entered_at=now, new=True, dirty=True,
        goal_until=(now + (doc.goal.within or GOAL_WINDOW_DEFAULT)) if doc.goal else None,
    )
    fx.decide(inst, "entry", "entered", now, reason=f"{signal.kind} '{signal.name}'", detail={
        "signal": signal.id, "version": version, "holdout": inst.holdout, **cand.why})
    enter_stage(doc, inst, cand.stage, signal, facts, fx, first=True)
    return inst


def enter_stage(doc: JourneyDocument, inst: Instance, stage: Stage, signal: Signal,
                facts: Facts, fx: Effects, *, first: bool = False,
                why: dict[str, Any] | None = None) -> None:
    now = facts.now
    if not first:
        fx.decide(inst, "stage", "left", now, detail={
            "to": stage.key, "seconds": round((now - inst.stage_entered_at).total_seconds(), 3)})
    previous = None if first else inst.stage
    inst.stage, inst.stage_entered_at, inst.epoch = stage.key, now, inst.epoch + 1
    inst.step, inst.wake_at, inst.wake_kind = None, None, None
    event = _event(signal)
    inst.context = {"event": event}
    inst.dirty = True
    if not first:  # a first stage's entry is the `entry` decision itself
        fx.decide(inst, "stage", "entered", now, detail={"from": previous, **(why or {})})
    if doc.goal and doc.goal.stage == stage.key:
        _goal(inst, facts, fx, f"stage '{stage.key}' entered")
    run_flow(doc, inst, facts, fx, event=event)


def on_signal(doc: JourneyDocument, inst: Instance, signal: Signal, facts: Facts,
              fx: Effects) -> None:
    """Apply one signal to one instance of the same customer and journey."""
    if not concerns(doc, signal, inst.instance_key):
        return
    now = facts.now
    if inst.active:
        for index, rule in enumerate(doc.exit_when):
            match = rule_matches(rule, signal, now)
            if match.matched:
                return exit_instance(inst, fx, facts, f"exit_when.{index}: {signal.kind} "
                                                      f"'{signal.name}'", match.why)
    goal = doc.goal
    if (goal and goal.event and goal.event == signal.name and signal.kind == "event"
            and inst.goal_at is None and (inst.goal_until is None or now <= inst.goal_until)
            and (goal.where is None or evaluate(goal.where, signal.data, now))):
        _goal(inst, facts, fx, f"event '{signal.name}'",
              revenue=goal_value(_event(signal).get("properties") or {},
                                 facts.revenue_properties))
    if not inst.active:
        return
    stage = doc.stage(inst.stage)
    assert stage is not None
    step = next((s for s in stage.steps if s.id == inst.step), None)
    if step is not None and step.wait_for is not None and inst.wake_kind == "timeout":
        wf = step.wait_for
        if signal.kind == "event" and signal.name == wf.event and (
                wf.where is None or evaluate(wf.where, signal.data, now)):
            inst.wake_at = inst.wake_kind = None
            run_flow(doc, inst, facts, fx, event=_event(signal), start=step.id, resume="event")
            if not inst.active:
                return
    here = doc.stage_index(inst.stage)
    for later in doc.stages[here + 1:]:
        match = rule_matches(later.enter, signal, now)
        if match.matched:
            return enter_stage(doc, inst, later, signal, facts, fx, why=match.why)


def on_timer(doc: JourneyDocument, inst: Instance, facts: Facts, fx: Effects) -> None:
    """The instance's timer is due: resume the step it waits at."""
    # No decision of its own: what the resumed step does is the trace (keeps firing cheap).
    kind, step = inst.wake_kind, inst.step
    assert inst.context is not None, "a timer fires on an instance loaded with its context"
    inst.wake_at = inst.wake_kind = None
    if kind == "idle":
        return complete(inst, fx, facts, f"idle in stage '{inst.stage}' for "
                                         f"{iso_duration(doc.idle_timeout)}")
    run_flow(doc, inst, facts, fx, event=inst.context.get("event") or {}, start=step,
             resume="timeout" if kind == "timeout" else "timer")


def _goal(inst: Instance, facts: Facts, fx: Effects, reason: str,
          revenue: float | None = None) -> None:
    """`revenue`: the goal event's value (a goal reached by entering a stage has none); the
    stats' revenue per customer sums it (`detail.revenue`)."""
    if inst.goal_at is None and (inst.goal_until is None or facts.now <= inst.goal_until):
        inst.goal_at, inst.dirty = facts.now, True
        detail: dict[str, Any] = {"holdout": inst.holdout}
        if revenue is not None:
            detail["revenue"] = revenue
        fx.decide(inst, "goal", "reached", facts.now, reason=reason, detail=detail)


def _event(signal: Signal) -> dict[str, Any]:
    event: dict[str, Any] = signal.data.get("event") or {}
    return event
