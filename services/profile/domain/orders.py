"""Each order counted once per `order_id`, on the profile as in the KPIs (pure).

The key of an order event is its `order_id`, else its event id: the primary key of
`profile.kpi_orders`, which is the durable register of the orders seen. The consumer reads
which of a batch's keys are there already (`kpis_store.known_orders`, one indexed probe per
key, once per batch); `OrderBook.first` then decides in memory, in offset order, which order
events count: the first of a key, never seen before. The batch's insert into `kpi_orders`
must find exactly those keys new, else another writer stored one meanwhile and the batch is
retried (`kpis_store.OrderRace`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.profile.domain.conventions import Conventions
from shared.contracts.events import Event

KEY_LENGTH = 200  # kpi_orders.order_key is varchar(200)


def order_key(properties: dict[str, Any], event_id: str) -> str:
    """The order's key: its `order_id`, else (none, empty or 0) its event id."""
    key = properties.get("order_id")
    return (str(key) if key else f"event:{event_id}")[:KEY_LENGTH]


def order_of(ev: Event, conv: Conventions) -> str | None:
    """The key of an event the KPIs count as an order (named in `order_events`), else None."""
    name = ev.event
    return order_key(ev.properties, ev.id) if name and name in conv.order_events else None


@dataclass
class OrderBook:
    """One batch's orders: the keys stored before it, and those it counted (by workspace)."""

    known: set[tuple[str, str]] = field(default_factory=set)
    counted: set[tuple[str, str]] = field(default_factory=set)

    def first(self, ws: str, key: str) -> bool:
        """True the first time an order is met (then it counts); False for a repeat."""
        k = (ws, key)
        if k in self.known or k in self.counted:
            return False
        self.counted.add(k)
        return True
