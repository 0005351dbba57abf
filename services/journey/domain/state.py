"""A customer's place in a journey, and what the engine decided while moving it (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from services.journey.domain.document import Send, Webhook
from services.journey.domain.policy import ContactPolicy, PastSend, TemplateMeta


@dataclass
class Instance:
    """One (journey version, customer, instance key) run. At most one is active per
    (journey, customer, instance key); its single pending timer is `wake_at`."""

    id: str
    workspace_id: str
    journey_key: str
    version: int
    profile_id: str
    instance_key: str
    entry_id: str
    stage: str
    status: str  # active | completed | exited
    holdout: bool
    entered_at: datetime
    stage_entered_at: datetime
    step: str | None = None
    epoch: int = 0  # stage entries so far: part of every idempotency key
    seq: int = 0  # steps executed so far
    wake_at: datetime | None = None
    wake_kind: str | None = None  # wait | wait_until | timeout | deferred
    ended_at: datetime | None = None
    exit_reason: str | None = None
    goal_at: datetime | None = None
    goal_until: datetime | None = None
    # The event behind the stage entry. None: not loaded (a signal's batch reads instances
    # without it; only a firing timer needs it) and so left as it is in the database.
    context: dict[str, Any] | None = field(default_factory=dict)
    new: bool = False
    dirty: bool = False

    @property
    def active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True)
class Subject:
    """Whom a decision is about when there is no instance (a customer who did not enter)."""

    workspace_id: str
    profile_id: str
    journey_key: str
    version: int
    instance_key: str = ""


@dataclass(slots=True)
class Decision:
    """One line of the "why?" trace."""

    instance: Instance | Subject
    kind: str  # entry | stage | step | send | branch | split | wait | timer | goal | exit
    outcome: str
    at: datetime
    stage: str | None = None
    step: str | None = None
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outgoing:
    """An effect that leaves the service: a send, a webhook call or a profile update."""

    instance: Instance
    stage: str
    step: str
    seq: int
    event: dict[str, Any]
    send: Send | None = None
    webhook: Webhook | None = None
    traits: dict[str, Any] | None = None
    expires_at: datetime | None = None  # a send held by the policy: not after this


@dataclass
class Facts:
    """What the engine knows about the customer right now."""

    now: datetime
    profile: dict[str, Any]
    tz: ZoneInfo
    # (channel, when) of every send to this customer, across all journeys of the workspace.
    recent_sends: list[tuple[str, datetime]] = field(default_factory=list)
    # The workspace's contact policy (None: none saved), what messaging says each template
    # is, the same sends with their topic and category, and global control membership.
    policy: ContactPolicy | None = None
    templates: dict[str, TemplateMeta] = field(default_factory=dict)
    past: list[PastSend] = field(default_factory=list)
    control: bool = False
    # Profile's `revenue_properties` convention: what a goal event is worth (uplift.py).
    revenue_properties: tuple[str, ...] = ("revenue", "total")


@dataclass
class Effects:
    decisions: list[Decision] = field(default_factory=list)
    outgoing: list[Outgoing] = field(default_factory=list)

    def decide(self, inst: Instance, kind: str, outcome: str, at: datetime, *,
               step: str | None = None, reason: str | None = None,
               detail: dict[str, Any] | None = None) -> None:
        self.decisions.append(Decision(inst, kind, outcome, at, inst.stage, step, reason,
                                       detail or {}))

    def note(self, subject: Subject, kind: str, outcome: str, at: datetime, *,
             stage: str | None = None, reason: str | None = None,
             detail: dict[str, Any] | None = None) -> None:
        self.decisions.append(Decision(subject, kind, outcome, at, stage, None, reason,
                                       detail or {}))
