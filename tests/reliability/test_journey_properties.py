"""Property tests (hypothesis) of the journey engine: an instance never holds two active
places (one active instance per journey, customer and instance key; an ended one holds no
timer), and nothing is sent for an instance after it exited or completed.

Generated journeys (stages entered by events, steps that send, wait, wait for an event with
a timeout, or exit; exit rules; every re-entry policy; with and without an instance key) and
generated event timelines go through:
- the engine's pure flow functions (`services/journey/domain/flow.py`), driven on virtual
  time as `simulate` drives them (signals and due timers in time order), the invariants
  checked after every signal and every timer, many examples;
- the service's transaction path against Postgres (`handlers.apply_signals`: inbox, load,
  apply, write back), cut into batches where the example says, fewer examples, each in a
  workspace of its own that is removed afterwards (its outbox rows too: nothing is
  published). Timers are not fired there (the timer worker claims due timers of every
  workspace); the pure part covers them.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import event as note
from hypothesis import settings as examples
from hypothesis import strategies as st
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert

from services.journey import handlers
from services.journey.domain.document import JourneyDocument
from services.journey.domain.flow import (
    entry_candidates,
    on_signal,
    on_timer,
    reentry_block,
    start_instance,
)
from services.journey.domain.signals import Signal
from services.journey.domain.state import Decision, Effects, Facts, Instance
from services.journey.domain.steps import exit_instance
from services.journey.domain.timing import zone
from services.journey.store import Documents
from services.journey.tables import (
    decisions,
    instances,
    journey_versions,
    journeys,
    outbox,
    sends,
    snapshots,
)
from shared.db import create_engine
from shared.settings import Settings

EVENTS = ["A", "B", "C"]
EXIT = "X"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
PROFILE = {"profile_id": "p1", "email": "p1@example.com"}


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    stages = []
    for s in range(draw(st.integers(1, 3))):
        ids = [f"s{s}k{n}" for n in range(draw(st.integers(1, 4)))]
        steps: list[dict[str, Any]] = []
        for n, sid in enumerate(ids):
            kind = draw(st.sampled_from(["send", "send", "wait", "exit"]
                                        + ["wait_for"] * (n < len(ids) - 1)))
            minutes = draw(st.integers(1, 180))
            if kind == "send":
                steps.append({"id": sid, "send": {"channel": "email", "template": f"t-{sid}"}})
            elif kind == "wait":
                steps.append({"id": sid, "wait": f"PT{minutes}M"})
            elif kind == "exit":
                steps.append({"id": sid, "exit": True})
            else:
                steps.append({"id": sid, "wait_for": {
                    "event": draw(st.sampled_from(EVENTS)), "timeout": f"PT{minutes}M",
                    "then": ids[n + 1], "else": ids[-1]}})
        stages.append({"key": f"s{s}", "enter": {"event": draw(st.sampled_from(EVENTS))},
                       "steps": steps})
    doc: dict[str, Any] = {"key": "prop", "name": "Property", "stages": stages,
                           "reentry": draw(st.sampled_from(["once", "after_exit", "always"]))}
    if draw(st.booleans()):
        doc["exit_when"] = [{"event": EXIT}]
    if draw(st.booleans()):
        doc["instance_key"] = "event.properties.order"
    return doc


# (minutes after T0, event name, order id); "cut" ends a batch (the real-DB part).
timelines = st.lists(st.one_of(
    st.tuples(st.integers(0, 600), st.sampled_from([*EVENTS, EXIT]),
              st.sampled_from(["o1", "o2"])),
    st.just((0, "cut", ""))), min_size=1, max_size=14)


def _signal(n: int, at: datetime, name: str, order: str, ws: str = "sim",
            profile: dict[str, Any] = PROFILE) -> Signal:
    event = {"event": name, "type": "track", "properties": {"order": order},
             "timestamp": at.isoformat()}
    return Signal(id=f"ev{n}", workspace_id=ws, profile_id=str(profile["profile_id"]),
                  kind="event", name=name, at=at, data={"event": event, "profile": profile})


def _never_two_active(runs: list[Instance]) -> None:
    active = [i.instance_key for i in runs if i.active]
    assert len(active) == len(set(active)), "two active instances for one instance key"
    for i in runs:
        assert i.active or (i.wake_at is None and i.wake_kind is None), "ended, still waiting"


def _nothing_after_exit(made: list[Decision]) -> None:
    """In decision order, per instance: after its exit, only a late goal may be recorded."""
    ended: set[str] = set()
    for d in made:
        if not isinstance(d.instance, Instance):
            continue
        if d.instance.id in ended:
            assert d.kind == "goal", (d.kind, d.outcome, "after the instance ended")
        if d.kind == "exit":
            ended.add(d.instance.id)


@examples(max_examples=300, deadline=None)
@given(documents(), timelines)
def test_engine_never_runs_two_active_places_nor_sends_after_an_exit(
        document: dict[str, Any], timeline: list[tuple[int, str, str]]) -> None:
    doc = JourneyDocument.model_validate(document)
    fx, runs = Effects(), []
    pending = sorted((T0 + timedelta(minutes=m), n, name, order)
                     for n, (m, name, order) in enumerate(timeline) if name != "cut")
    for _ in range(10_000):  # as `simulate`: the earlier of the next timer and next event
        timers = [(i.wake_at, n) for n, i in enumerate(runs) if i.active and i.wake_at]
        nxt = pending[0] if pending else None
        if timers and (nxt is None or min(timers)[0] <= nxt[0]):
            at, index = min(timers)
            on_timer(doc, runs[index], Facts(at, PROFILE, zone(None)), fx)
            _never_two_active(runs)
            continue
        if nxt is None:
            break
        pending.pop(0)
        at, n, name, order = nxt
        facts, signal = Facts(at, PROFILE, zone(None)), _signal(n, at, name, order)
        for inst in runs:
            if inst.active or inst.goal_at is None:
                on_signal(doc, inst, signal, facts, fx)
        for cand in entry_candidates(doc, signal, []):
            latest = next((i for i in reversed(runs) if i.instance_key == cand.instance_key),
                          None)
            if latest is not None and latest.active and doc.reentry == "always":
                exit_instance(latest, fx, facts, "re-entered (reentry=always)")
            if reentry_block(doc, latest, facts.now) is None:
                runs.append(start_instance(doc, 0, cand, signal, facts, fx))
        _never_two_active(runs)
    else:
        raise AssertionError("the timeline never ended")
    _nothing_after_exit(fx.decisions)
    note(f"{len(runs)} instance(s), {sum(not i.active for i in runs)} ended")
    sent = [o.instance.id for o in fx.outgoing if o.send is not None]
    assert len(sent) == sum(1 for d in fx.decisions if d.kind == "send" and d.outcome == "sent")


class _Kept:
    """A publisher that keeps the outbox rows (deleted by the test, never published)."""

    def __init__(self) -> None:
        self.rows: list[Any] = []

    def publish_soon(self, rows: list[Any]) -> None:
        self.rows += rows


class _Clock:
    def __init__(self) -> None:
        self.at = T0

    def now(self) -> datetime:
        return self.at


@pytest.mark.integration
@pytest.mark.timeout(240)
@examples(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents(), timelines)
def test_engine_through_postgres_never_runs_two_active_places_nor_sends_after_an_exit(
        settings: Settings, document: dict[str, Any],
        timeline: list[tuple[int, str, str]]) -> None:
    asyncio.run(_run(settings, document, timeline))


async def _run(settings: Settings, document: dict[str, Any],
               timeline: list[tuple[int, str, str]]) -> None:
    ws, pid = f"ws-jp-{uuid.uuid4().hex[:10]}", str(uuid.uuid4())
    profile = {"profile_id": pid, "email": f"{pid}@example.com"}
    engine = create_engine(settings.database_url, pool_size=1)
    rt, clock, docs, kept = SimpleNamespace(engine=engine, settings=settings), _Clock(), \
        Documents(), _Kept()
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(journeys).values(
                workspace_id=ws, key="prop", name="Property", status="published",
                published_version=1))
            await conn.execute(insert(journey_versions).values(
                workspace_id=ws, key="prop", version=1, document=document))
        batch: list[Signal] = []

        async def flush() -> None:
            if batch:
                await handlers.apply_signals(rt, clock, docs, kept,  # type: ignore[arg-type]
                                             "journey.profile-events",
                                             [f"{ws}:{s.id}" for s in batch], list(batch))
                batch.clear()

        # In time order (as a customer's events are on their partition), cut into batches.
        ordered = sorted(enumerate(timeline), key=lambda e: (e[1][0], e[0]))
        for n, (minutes, name, order) in ordered:
            if name == "cut":
                await flush()
                continue
            clock.at = T0 + timedelta(minutes=minutes)
            batch.append(_signal(n, clock.at, name, order, ws, profile))
        await flush()
        async with engine.connect() as conn:
            rows = (await conn.execute(select(instances).where(
                instances.c.workspace_id == ws))).mappings().all()
            made = (await conn.execute(select(decisions).where(
                decisions.c.workspace_id == ws).order_by(decisions.c.id))).mappings().all()
        active = [r["instance_key"] for r in rows if r["status"] == "active"]
        assert len(active) == len(set(active)), "two active instances for one instance key"
        assert all(r["status"] == "active" or r["wake_at"] is None for r in rows)
        ended: set[str] = set()
        for d in made:
            if d["instance_id"] in ended:
                assert d["kind"] == "goal", (d["kind"], d["outcome"], "after the instance ended")
            if d["kind"] == "exit":
                ended.add(d["instance_id"])
        commands = sum(1 for r in kept.rows if r.topic.endswith("send-commands"))
        note(f"sent {'some' if commands else 'none'}, ended {'some' if ended else 'none'}")
        assert commands == sum(1 for d in made if d["kind"] == "send" and d["outcome"] == "sent")
    finally:
        async with engine.begin() as conn:
            await conn.execute(delete(outbox).where(outbox.c.id.in_([r.id for r in kept.rows])))
            for table in (instances, decisions, sends, snapshots, journey_versions, journeys):
                await conn.execute(delete(table).where(table.c.workspace_id == ws))
        await engine.dispose()
