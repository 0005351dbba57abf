"""What one batch of events and delivery outcomes contributes to the KPIs (pure: noted per
message while the batch is applied; `services.profile.kpis_store.write` adds it up)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from services.profile.domain.conventions import Conventions, order_value
from services.profile.domain.kpis import COUNTED_VALUES, TOUCH_VALUES
from services.profile.domain.orders import order_key
from shared.contracts.delivery import DeliveryEvent, DeliveryStatus
from shared.contracts.events import Event

CONTROL_RULE = "control_group"  # journey's rule on a control-group member's suppressed send

class Delivery(NamedTuple):
    ws: str
    pid: str
    message_id: str
    status: DeliveryStatus
    channel: str
    journey: str | None
    broadcast: str | None
    template: str | None
    at: datetime


_NOTED = COUNTED_VALUES.keys() | TOUCH_VALUES.keys()  # the outcomes `deliveries` holds
_tuple = tuple.__new__  # a NamedTuple without its Python-level __new__


class Order(NamedTuple):
    ws: str
    pid: str
    key: str
    at: datetime
    revenue: float
    currency: str


class Refund(NamedTuple):
    ws: str
    pid: str
    order_key: str | None
    at: datetime
    amount: float
    currency: str


@dataclass
class KpiFacts:
    """What one batch contributes to the KPIs, noted per message (cheap: no I/O)."""

    deliveries: list[Delivery] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    refunds: list[Refund] = field(default_factory=list)
    nps: list[tuple[str, str, datetime, float]] = field(default_factory=list)  # ws pid at score
    # Global control-group members whose send journey suppressed: (ws, pid, at).
    control: list[tuple[str, str, datetime]] = field(default_factory=list)

    def note_delivery(self, pid: str, d: DeliveryEvent) -> None:
        journey = d.journey
        self.delivery(d.workspace_id, pid, d.message_id, d.status, d.channel._value_,
                      journey.key if journey else None, d.broadcast, d.template,
                      d.occurred_at, bool(d.test), d.rule)

    def delivery(self, ws: str, pid: str, message_id: str, status: DeliveryStatus,
                 channel: str, journey: str | None, broadcast: str | None,
                 template: str | None, at: datetime, test: bool,
                 rule: str | None = None) -> None:
        """One outcome (the consumer notes every outcome of a batch: the status matched by
        its value, as COUNTED_VALUES)."""
        if test:
            return
        if status._value_ not in _NOTED:
            if status is DeliveryStatus.suppressed and rule == CONTROL_RULE:
                self.control.append((ws, pid, at))
            return
        self.deliveries.append(_tuple(Delivery, (
            ws, pid, message_id[:200], status, channel, journey and journey[:200],
            broadcast and broadcast[:200], template and template[:200], at)))

    def note_event(self, pid: str, ev: Event, conv: Conventions) -> None:
        if ev.event:
            self.track(ev.workspace_id, pid, ev.id, ev.event, ev.properties, ev.timestamp, conv)

    def track(self, ws: str, pid: str, event_id: str, name: str, props: dict[str, Any],
              at: datetime, conv: Conventions) -> None:
        if name in conv.order_events:
            self.orders.append(Order(ws, pid, order_key(props, event_id), at,
                                     order_value(props, conv), _currency(props)))
        elif name in conv.refund_events:
            key = props.get("order_id")
            self.refunds.append(Refund(ws, pid, str(key)[:200] if key else None, at,
                                        abs(order_value(props, conv)), _currency(props)))
        elif name in conv.nps_events:
            score = props.get(conv.nps_property)
            if isinstance(score, int | float) and not isinstance(score, bool) \
                    and 0 <= score <= 10:
                self.nps.append((ws, pid, at, float(score)))

    def __bool__(self) -> bool:
        return bool(self.deliveries or self.orders or self.refunds or self.nps
                    or self.control)


def _currency(props: dict[str, Any]) -> str:
    value = props.get("currency")
    return value.strip().upper()[:8] if isinstance(value, str) else ""
