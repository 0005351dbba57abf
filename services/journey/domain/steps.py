"""The step interpreter: run a stage's flow from a step until it waits, ends or exits (pure).

`resume` says why a waiting step runs again: "timer" (its wait passed, or a deferred send
is due), "event" (`wait_for` matched) or "timeout" (`wait_for` timed out).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from services.journey.domain.conditions import evaluate, seen_values
from services.journey.domain.dates import as_datetime
from services.journey.domain.document import JourneyDocument, Stage, Step, WaitField
from services.journey.domain.guards import check_send
from services.journey.domain.ids import bucket, idempotency_key
from services.journey.domain.policy import PastSend, check
from services.journey.domain.state import Effects, Facts, Instance, Outgoing
from services.journey.domain.timing import next_local_time
from shared.conditions import MISSING, lookup

MAX_STEPS_PER_RUN = 100  # a `next` loop without a wait must not spin forever

# The rule behind a journey guardrail's outcome, as delivery events name it.
_GUARD_RULES = {"held": "holdout", "skipped": "undeliverable"}
_FOLLOWING = "\0following"  # go to the next step in document order
_STOP = "\0stop"  # the instance now waits at the current step


def run_flow(doc: JourneyDocument, inst: Instance, facts: Facts, fx: Effects, *,
             event: dict[str, Any], start: str | None = None, resume: str | None = None) -> None:
    """Advance `inst` through its stage's steps; mutates `inst`, appends to `fx`."""
    stage = doc.stage(inst.stage)
    assert stage is not None, "instances only stand in stages of their own version"
    step = _step(stage, start) if start else (stage.steps[0] if stage.steps else None)
    inst.dirty = True
    for _ in range(MAX_STEPS_PER_RUN):
        if step is None:
            return _flow_done(doc, inst, facts, fx)
        inst.step = step.id
        inst.seq += 1
        target = _execute(doc, stage, step, inst, facts, fx, event, resume)
        resume = None
        if target == _STOP:
            return
        if not inst.active:
            return
        if target == "end":
            step = None
        elif target == _FOLLOWING:
            index = stage.steps.index(step) + 1
            step = stage.steps[index] if index < len(stage.steps) else None
        else:
            step = _step(stage, target)
    exit_instance(inst, fx, facts, f"step limit: more than {MAX_STEPS_PER_RUN} steps without "
                                    f"a wait")


def _step(stage: Stage, step_id: str) -> Step | None:
    return next((s for s in stage.steps if s.id == step_id), None)


def _execute(doc: JourneyDocument, stage: Stage, step: Step, inst: Instance, facts: Facts,
             fx: Effects, event: dict[str, Any], resume: str | None) -> str:
    now = facts.now
    then = step.next or _FOLLOWING
    if step.send is not None or step.webhook is not None:
        channel = step.send.channel if step.send else "webhook"
        verdict = check_send(doc, channel, inst.holdout, facts)
        detail: dict[str, Any] = {"channel": channel}
        if step.send:
            detail["template"] = step.send.template
        if verdict.outcome == "send" and facts.policy is not None:
            held = _policy(inst, stage.key, step, channel, facts, fx, detail)
            if held is not None:
                return _STOP if held == "deferred" else then
        if verdict.outcome == "send":
            expires = _held_since(inst, step, facts)
            fx.outgoing.append(Outgoing(inst, stage.key, step.id, inst.seq, event,
                                        send=step.send, webhook=step.webhook,
                                        expires_at=expires))
            _record(facts, channel, step.send.template if step.send else None)
            _release(inst, step.id)
            fx.decide(inst, "send", "sent", now, step=step.id, detail=detail)
            return then
        detail["message_id"] = message_key(inst, stage.key, step.id, inst.seq)
        detail["rule"] = _GUARD_RULES.get(verdict.outcome) or (
            "quiet_hours" if (verdict.reason or "").startswith("quiet_hours")
            else f"frequency_cap.{channel}")
        fx.decide(inst, "send", verdict.outcome, now, step=step.id, reason=verdict.reason,
                  detail=detail | ({"until": verdict.until.isoformat()} if verdict.until else {}))
        if verdict.outcome == "deferred":
            assert verdict.until is not None
            _sleep(inst, verdict.until, "deferred")
            return _STOP
        if verdict.outcome == "skipped" and step.send and step.send.fallback:
            fx.decide(inst, "step", "fallback", now, step=step.id, detail={
                "to": step.send.fallback})
            return step.send.fallback
        return then
    if step.wait is not None:
        if resume == "timer":
            return then
        if isinstance(step.wait, WaitField):
            return _wait_field(step.wait, inst, fx, facts, step, event, then)
        return _wait(inst, fx, facts, step, now + step.wait, "wait", "wait")
    if step.wait_until is not None:
        if resume == "timer":
            return then
        due = next_local_time(now, facts.tz, step.wait_until.time, step.wait_until.weekdays)
        return _wait(inst, fx, facts, step, due, "wait_until", "wait_until")
    if step.wait_for is not None:
        if resume == "event":
            fx.decide(inst, "wait_for", "matched", now, step=step.id, detail={
                "event": step.wait_for.event, "to": step.wait_for.then})
            return step.wait_for.then
        if resume == "timeout":
            fx.decide(inst, "wait_for", "timed_out", now, step=step.id, detail={
                "event": step.wait_for.event, "to": step.wait_for.else_})
            return step.wait_for.else_
        return _wait(inst, fx, facts, step, now + step.wait_for.timeout, "timeout", "wait_for",
                     {"event": step.wait_for.event})
    data = {"event": event, "profile": facts.profile}
    if step.branch is not None:
        for index, case in enumerate(step.branch.cases):
            if evaluate(case.when, data, now):
                fx.decide(inst, "branch", "case", now, step=step.id, detail={
                    "case": index, "to": case.next, "seen": seen_values(case.when, data)})
                return case.next
        seen = {k: v for c in step.branch.cases for k, v in seen_values(c.when, data).items()}
        fx.decide(inst, "branch", "default", now, step=step.id, detail={
            "to": step.branch.default or "following step", "seen": seen})
        return step.branch.default or then
    if step.split is not None:
        roll = bucket(doc.key, inst.profile_id, inst.instance_key, stage.key, step.id)
        edge = 0.0
        for index, path in enumerate(step.split):
            edge += path.percent
            if roll < edge:
                fx.decide(inst, "split", "path", now, step=step.id, detail={
                    "path": index, "to": path.next or "end"})
                return path.next or "end"
        fx.decide(inst, "split", "remainder", now, step=step.id, detail={"to": "end"})
        return "end"
    if step.update_profile is not None:
        fx.outgoing.append(Outgoing(inst, stage.key, step.id, inst.seq, event,
                                    traits=dict(step.update_profile)))
        fx.decide(inst, "update_profile", "requested", now, step=step.id, detail={
            "traits": sorted(step.update_profile)})
        return then
    exit_instance(inst, fx, facts, f"exit step '{step.id}'")
    return _STOP


def _policy(inst: Instance, stage: str, step: Step, channel: str, facts: Facts,
            fx: Effects, detail: dict[str, Any]) -> str | None:
    """The workspace's contact policy on this send: None when it may go, else the
    outcome (`deferred`: the instance waits at the step; others move on)."""
    assert facts.policy is not None
    template = detail.get("template")
    meta = facts.templates.get(template) if template else None
    since = None
    if inst.context is not None:
        held = inst.context.get("held") or {}
        if held.get("step") == step.id and held.get("since"):
            since = datetime.fromisoformat(held["since"])
    rules = facts.policy
    if step.send is not None and step.send.on_hold is not None:
        rules = rules.model_copy(update={"on_hold": step.send.on_hold})
    verdict = check(rules, channel, meta, facts.profile, facts.past, facts.now, facts.tz,
                    control=facts.control, held_since=since, sender=inst.journey_key)
    if verdict.sends:
        return None
    key = message_key(inst, stage, step.id, inst.seq)
    fx.decide(inst, "send", verdict.outcome, facts.now, step=step.id, reason=verdict.reason,
              detail=detail | verdict.detail() | {"message_id": key, "policy": True})
    if verdict.outcome == "deferred":
        assert verdict.until is not None
        if inst.context is not None and since is None:
            inst.context["held"] = {"step": step.id, "since": facts.now.isoformat()}
        _sleep(inst, verdict.until, "deferred")
        return "deferred"
    _release(inst, step.id)
    return verdict.outcome


def _held_since(inst: Instance, step: Step, facts: Facts) -> datetime | None:
    """When a send that the policy held now goes out: the moment it expires."""
    if facts.policy is None or not inst.context:
        return None
    on_hold = (step.send.on_hold if step.send and step.send.on_hold
               else facts.policy.on_hold)
    held = inst.context.get("held") or {}
    if on_hold.expire_after is None or held.get("step") != step.id or not held.get("since"):
        return None
    return datetime.fromisoformat(held["since"]) + on_hold.expire_after


def _release(inst: Instance, step_id: str) -> None:
    if inst.context and (inst.context.get("held") or {}).get("step") == step_id:
        inst.context.pop("held", None)


def _record(facts: Facts, channel: str, template: str | None) -> None:
    """A send handed over in this batch counts for the next one of the same customer."""
    facts.recent_sends.append((channel, facts.now))
    meta = facts.templates.get(template) if template else None
    facts.past.append(PastSend(channel, meta.topic if meta else None,
                               meta.category if meta else None, facts.now))


def message_key(inst: Instance, stage: str, step: str, seq: int) -> str:
    """The send's idempotency key (as services/journey/outgoing.send_key makes it)."""
    return idempotency_key(inst.workspace_id, inst.journey_key, inst.version, inst.id,
                           inst.instance_key, stage, inst.epoch, step, seq)


def _wait_field(spec: WaitField, inst: Instance, fx: Effects, facts: Facts, step: Step,
                event: dict[str, Any], then: str) -> str:
    """Sleep until the date at `spec.until_field` (+ offset). Missing or not a date: go to
    `spec.missing` (default: end the flow). Already past: go on at once."""
    value = lookup({"event": event, "profile": facts.profile}, spec.until_field)
    due = as_datetime(None if value is MISSING else value, facts.tz)
    if due is None:
        target = spec.missing or "end"
        why = "missing" if value is MISSING or value is None else "not a date"
        fx.decide(inst, "wait", "skipped", facts.now, step=step.id,
                  reason=f"{spec.until_field}: {why}", detail={"to": target})
        return target
    due += spec.offset or timedelta(0)
    if due <= facts.now:
        fx.decide(inst, "wait", "passed", facts.now, step=step.id,
                  reason=f"{spec.until_field}: the date has passed",
                  detail={"until": due.isoformat()})
        return then
    return _wait(inst, fx, facts, step, due, "wait", "wait", {"field": spec.until_field})


def _wait(inst: Instance, fx: Effects, facts: Facts, step: Step, due: Any, kind: str,
          label: str, detail: dict[str, Any] | None = None) -> str:
    _sleep(inst, due, kind)
    fx.decide(inst, "wait", label, facts.now, step=step.id,
              detail={"until": due.isoformat()} | (detail or {}))
    return _STOP


def _sleep(inst: Instance, due: Any, kind: str) -> None:
    inst.wake_at, inst.wake_kind = due, kind


def _flow_done(doc: JourneyDocument, inst: Instance, facts: Facts, fx: Effects) -> None:
    """The stage's flow ended: the last stage completes the journey; others stay in stage."""
    inst.step, inst.wake_at, inst.wake_kind = None, None, None
    if doc.stage_index(inst.stage) == len(doc.stages) - 1:
        complete(inst, fx, facts, "last stage's flow finished")
    else:
        # Idle in the stage until a later stage's rule matches, for at most `idle_timeout`.
        _sleep(inst, facts.now + doc.idle_timeout, "idle")
        fx.decide(inst, "stage", "idle", facts.now, reason="flow finished; stays in the stage "
                                                            "until a later stage's rule matches",
                  detail={"until": inst.wake_at.isoformat() if inst.wake_at else None})


def complete(inst: Instance, fx: Effects, facts: Facts, reason: str) -> None:
    inst.status, inst.ended_at, inst.step = "completed", facts.now, None
    inst.wake_at = inst.wake_kind = None
    inst.dirty = True
    fx.decide(inst, "exit", "completed", facts.now, reason=reason)


def exit_instance(inst: Instance, fx: Effects, facts: Facts, reason: str,
                  detail: dict[str, Any] | None = None) -> None:
    """End at once: cancels the pending timer, records why."""
    inst.status, inst.exit_reason, inst.ended_at = "exited", reason[:200], facts.now
    inst.wake_at, inst.wake_kind = None, None
    inst.dirty = True
    fx.decide(inst, "exit", "exited", facts.now, step=inst.step, reason=reason, detail=detail)


def stage_duration(inst: Instance, facts: Facts) -> timedelta:
    return facts.now - inst.stage_entered_at
