"""One transaction's worth of engine work: load state for a batch, apply, write it back.

Used by both consumers (signals) and the timer worker (due instances). Everything a
batch changes (instances, decisions, sends, outbox rows) commits together, so a
redelivered batch or a re-claimed timer either sees the effect or redoes all of it.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from services.journey import metrics, store, wakeups
from services.journey.domain.document import JourneyDocument
from services.journey.domain.flow import (
    Candidate,
    entry_candidates,
    on_signal,
    on_timer,
    reentry_block,
    start_instance,
)
from services.journey.domain.policy import PastSend, TemplateMeta, in_control
from services.journey.domain.signals import Signal
from services.journey.domain.state import Decision, Effects, Facts, Instance, Outgoing, Subject
from services.journey.domain.steps import exit_instance
from services.journey.domain.timing import zone
from services.journey.outcomes import outcome_message
from services.journey.outgoing import send_key, to_message
from services.journey.policy.store import Loaded
from services.journey.workspaces import Workspaces
from services.journey.workspaces import read as read_workspaces
from shared.db.outbox import OutboxRow, Pending
from shared.settings import Settings

Pair = store.Pair
# A journey a signal may enter: (version, document, entry candidates, near misses).
Entries = tuple[int, JourneyDocument, list[Candidate], list[dict[str, Any]]]


class Unit:
    def __init__(self, conn: AsyncConnection, docs: store.Documents, settings: Settings,
                 outbox: Table, now: datetime) -> None:
        self.conn, self.docs, self.settings, self.outbox, self.now = (
            conn, docs, settings, outbox, now)
        self.fx = Effects()
        self.instances: dict[str, Instance] = {}
        self.latest: dict[tuple[str, str, str, str], Instance] = {}
        self.live: dict[str, list[tuple[int, JourneyDocument]]] = {}
        self.profiles: dict[Pair, dict[str, Any]] = {}
        self.sends: dict[Pair, list[tuple[str, datetime]]] = {}
        self.by_pair: dict[Pair, list[Instance]] = {}
        # signal id -> the live journeys it may enter (or nearly did), with the entry
        # candidates and near misses, computed once. Journeys the signal does not concern
        # are left out: most of a workspace's journeys, for most signals.
        self.entries: dict[str, list[Entries]] = {}
        # The contact policy and template facts of the batch's workspaces, each customer's
        # past sends with topic and category, and control group membership.
        self.policies: dict[str, Loaded] = {}
        self.templates: dict[str, dict[str, TemplateMeta]] = {}
        self.past: dict[Pair, list[PastSend]] = {}
        self.control: dict[Pair, bool] = {}
        self.zones: dict[str, str] = {}  # workspace zone: for customers without one
        self.revenue_names: dict[str, tuple[str, ...]] = {}  # profile's revenue_properties
        # The earliest timer of the batch's instances once flushed: announced after commit
        # to the timer workers of this process (services/journey/wakeups.py).
        self.earliest_wake: datetime | None = None
        self._read: set[str] = set()  # workspaces whose policy and templates were read
        self._read_live: set[str] = set()  # ... and whose live journeys were too
        self._locked = False  # the customers' advisory locks are held (lock_customers)

    async def load_workspaces(self, workspaces: set[str], *, live: bool = False) -> None:
        """Policies and template facts of these workspaces, and with `live` their live
        journeys (`self.live`): one statement for those not read yet in this unit."""
        missing = workspaces - (self._read_live if live else self._read)
        if missing:
            self._take(await read_workspaces(self.conn, self.docs, missing, live=live),
                       missing, live)

    async def claim(self, inbox: Table, ids: dict[str, list[str]], workspaces: set[str]
                    ) -> dict[str, set[str]]:
        """The inbox claim of a poll's ids by consumer (returns, by consumer, the ids not
        seen before) and `load_workspaces(workspaces, live=True)`, in one statement."""
        found = await read_workspaces(self.conn, self.docs, workspaces, live=True,
                                      claim=(inbox, ids))
        self._take(found, workspaces, True)
        return found.claimed

    def _take(self, found: Workspaces, missing: set[str], live: bool) -> None:
        self.policies.update(found.policies)
        self.templates.update(found.templates)
        self._read |= missing
        if live:
            self.live.update(found.live)
            self._read_live |= missing

    def in_control(self, workspace_id: str, profile_id: str) -> bool:
        """Control membership for a profile seen for the first time."""
        loaded = self.policies.get(workspace_id)
        return loaded is not None and in_control(loaded.salt, profile_id,
                                                 loaded.policy.control_group_percent)

    # --- loading -----------------------------------------------------------------------

    async def load_for_signals(self, signals: list[Signal]) -> None:
        pairs = sorted({(s.workspace_id, s.profile_id) for s in signals})
        await self.load_workspaces({ws for ws, _ in pairs}, live=True)
        self._adopt(await store.open_instances(self.conn, pairs, self.now))
        wanted = []
        for signal in signals:
            entries = self.entries[signal.id] = []
            only = signal.data.get("only_journey")  # a publish's `include_existing` entry
            for version, doc in self.live.get(signal.workspace_id, []):
                if only is not None and doc.key != only:
                    continue
                misses: list[dict[str, Any]] = []
                cands = entry_candidates(doc, signal, misses)
                if cands or misses:
                    entries.append((version, doc, cands, misses))
                for c in cands:
                    wanted.append((signal.workspace_id, doc.key, signal.profile_id,
                                   c.instance_key))
        # The customers' advisory locks (see _load_common) go with this read where a cap
        # or the policy already counts past sends: a round trip less. Taken after the
        # open instances' row locks, as always, so a timer worker (rows, then these)
        # cannot deadlock with a batch.
        await self.docs.of(self.conn, {(i.workspace_id, i.journey_key, i.version)
                                       for i in self.instances.values()})
        lock = pairs if wanted and self._window(pairs) else []
        for inst in await store.latest_instances(self.conn, wanted, lock):
            if inst.id not in self.instances:
                self._adopt([inst])
            inst = self.instances[inst.id]
            self.latest[(inst.workspace_id, inst.journey_key, inst.profile_id,
                         inst.instance_key)] = inst
        self._locked = bool(lock)
        carried = {(s.workspace_id, s.profile_id) for s in signals if s.profile}
        self.profiles.update(await store.load_snapshots(
            self.conn, [p for p in pairs if p not in carried and p not in self.control],
            self.control))
        await self._load_common(pairs)

    async def load_due(self, limit: int) -> list[Instance]:
        due = await store.due_instances(self.conn, self.now, limit)
        if not due:
            return due  # nothing to load for (the idle worker's path: one statement)
        self._adopt(due)
        pairs = sorted({(i.workspace_id, i.profile_id) for i in due})
        await self.load_workspaces({ws for ws, _ in pairs})
        self.profiles.update(await store.load_snapshots(self.conn, pairs, self.control))
        await self._load_common(pairs)
        return due

    def _adopt(self, loaded: list[Instance]) -> None:
        for inst in loaded:
            self.instances[inst.id] = inst
            self.by_pair.setdefault((inst.workspace_id, inst.profile_id), []).append(inst)
            key = (inst.workspace_id, inst.journey_key, inst.profile_id, inst.instance_key)
            if key not in self.latest or self.latest[key].entered_at < inst.entered_at:
                self.latest[key] = inst

    async def _load_common(self, pairs: list[Pair]) -> None:
        await self.docs.of(self.conn, {(i.workspace_id, i.journey_key, i.version)
                                       for i in self.instances.values()})
        window = self._window(pairs)
        if window:
            if not self._locked:
                await store.lock_customers(self.conn, pairs)
            rows = await store.recent_sends(self.conn, pairs, self.now - window)
            for pair, sent in rows.items():
                self.sends[pair] = [(channel, at) for channel, at, _t, _c in sent]
                self.past[pair] = [PastSend(ch, topic, cat, at) for ch, at, topic, cat in sent]

    def _window(self, pairs: list[Pair]) -> timedelta:
        """How far back past sends count: the longest cap of the live journeys and of the
        instances' versions (parsed), or the policy's lookback. Zero: none counts."""
        window = timedelta(0)
        for docs in self.live.values():
            for _v, doc in docs:
                window = max([window, *(c.per for c in doc.frequency_cap.values())])
        for inst in self.instances.values():
            doc = self.docs.get(inst.workspace_id, inst.journey_key, inst.version)
            window = max([window, *(c.per for c in doc.frequency_cap.values())])
        for ws in {ws for ws, _ in pairs}:
            if ws in self.policies:
                window = max(window, self.policies[ws].policy.lookback)
        return window

    # --- applying ----------------------------------------------------------------------

    def facts(self, workspace_id: str, profile_id: str) -> Facts:
        profile = self.profiles.get((workspace_id, profile_id), {"profile_id": profile_id})
        pair = (workspace_id, profile_id)
        loaded = self.policies.get(workspace_id)
        return Facts(now=self.now, profile=profile,
                     tz=zone(profile.get("timezone") or self.zones.get(workspace_id)),
                     recent_sends=self.sends.setdefault(pair, []),
                     policy=loaded.policy if loaded else None,
                     templates=self.templates.get(workspace_id, {}),
                     past=self.past.setdefault(pair, []), control=self.control.get(pair, False),
                     **({"revenue_properties": self.revenue_names[workspace_id]}
                        if workspace_id in self.revenue_names else {}))

    def apply_signal(self, signal: Signal) -> None:
        pair = (signal.workspace_id, signal.profile_id)
        if signal.profile:
            self.profiles[pair] = signal.profile
        facts = self.facts(*pair)
        for inst in ([] if signal.data.get("only_journey") else list(self.by_pair.get(pair, []))):
            if inst.active or (inst.goal_at is None and inst.goal_until is not None):
                on_signal(self.docs.get(inst.workspace_id, inst.journey_key, inst.version),
                          inst, signal, facts, self.fx)
        for version, doc, cands, misses in self.entries.get(signal.id, []):
            for cand in cands:
                self._enter(doc, version, cand, signal, facts)
            for miss in misses:
                self.fx.note(Subject(signal.workspace_id, signal.profile_id, doc.key, version),
                             "entry", "not_entered", self.now, stage=miss.pop("stage"),
                             reason=miss.pop("reason"), detail=miss | {"signal": signal.id})

    def _enter(self, doc: JourneyDocument, version: int, cand: Candidate, signal: Signal,
               facts: Facts) -> None:
        key = (signal.workspace_id, doc.key, signal.profile_id, cand.instance_key)
        latest = self.latest.get(key)
        if latest is not None and latest.active and doc.reentry == "always":
            exit_instance(latest, self.fx, facts, f"re-entered on {signal.kind} "
                                                  f"'{signal.name}' (reentry=always)")
        blocked = reentry_block(doc, latest, self.now)
        if blocked is not None:
            self.fx.note(Subject(signal.workspace_id, signal.profile_id, doc.key, version,
                                 cand.instance_key), "entry", "blocked", self.now,
                         stage=cand.stage.key, reason=blocked, detail={"signal": signal.id})
            return
        inst = start_instance(doc, version, cand, signal, facts, self.fx)
        self._adopt([inst])
        self.latest[key] = inst

    def fire(self, inst: Instance) -> None:
        doc = self.docs.get(inst.workspace_id, inst.journey_key, inst.version)
        on_timer(doc, inst, self.facts(inst.workspace_id, inst.profile_id), self.fx)

    # --- writing -----------------------------------------------------------------------

    async def flush(self) -> list[OutboxRow]:
        """Write everything back; returns the outbox rows to publish after commit."""
        self.earliest_wake = min((i.wake_at for i in self.instances.values()
                                  if i.status == "active" and i.wake_at is not None),
                                 default=None)
        for (kind, outcome), count in Counter(
                (d.kind, d.outcome) for d in self.fx.decisions).items():
            metrics.DECISIONS.labels(kind, outcome).inc(count)
        made = list(self.fx.decisions)
        messages: dict[str, list[Pending]] = {}
        sent = []
        for out in self.fx.outgoing:
            inst = out.instance
            profile = self.profiles.get((inst.workspace_id, inst.profile_id), {})
            key = send_key(out)
            message = to_message(out, key, profile, self.now)
            if message is None:
                made.append(_unaddressable(out, self.now))
                continue
            messages.setdefault(message.short, []).append(message)
            if out.traits is None:
                meta = (self.templates.get(inst.workspace_id, {}).get(out.send.template)
                        if out.send else None)
                sent.append({"workspace_id": inst.workspace_id, "idempotency_key": key,
                             "profile_id": inst.profile_id, "journey_key": inst.journey_key,
                             "channel": out.send.channel if out.send else "webhook",
                             "sent_at": self.now, "topic": meta.topic if meta else None,
                             "category": meta.category if meta else None})
        for decision in self.fx.decisions:
            message = outcome_message(decision, self.now)
            if message is not None:
                messages.setdefault(message.short, []).append(message)
        queued = [m._replace(topic=self.settings.topic(short))
                  for short, batch in sorted(messages.items()) for m in batch]
        # One statement for all of it (and the changed instances' UPDATE before it).
        return await store.write(self.conn, self.instances.values(), made, sent, queued,
                                 self.outbox)


def announce_timers(unit: Unit | None) -> None:
    """After the commit: wake this process's timer workers if the batch set a timer."""
    if unit is not None and unit.earliest_wake is not None:
        wakeups.TIMERS.due((unit.earliest_wake - unit.now).total_seconds())


def _unaddressable(out: Outgoing, now: datetime) -> Decision:
    return Decision(out.instance, "update_profile", "skipped", now, out.stage, out.step,
                    "the profile has no user_id to address an identify call to")
