"""Lifecycle stage from recency against the customer's own purchase rhythm (pure).

rhythm E = the mean interval between the customer's orders (first to last, over n-1 gaps),
or the workspace default until there are two orders. With r = days since the last order:

    no orders                      -> None (not a customer yet)
    r > churned_after * E  (6x)    -> churned
    r > lapsed_after * E   (3x)    -> lapsed
    r > at_risk_after * E  (1.5x)  -> at_risk
    last order ended a gap > lapsed_after * E   -> reactivated
    one order                      -> new
    otherwise                      -> active
"""

from __future__ import annotations

from datetime import datetime

from services.profile.domain.conventions import Conventions

STAGES = ("new", "active", "at_risk", "lapsed", "churned", "reactivated")
DAY = 86_400.0


def rhythm_days(order_count: int, first: datetime | None, last: datetime | None,
                conv: Conventions) -> float:
    """Mean inter-purchase interval in days, floored at one day; the default before 2 orders."""
    if order_count < 2 or first is None or last is None:
        return conv.default_purchase_interval_days
    return max((last - first).total_seconds() / DAY / (order_count - 1), 1.0)


def lifecycle_stage(*, order_count: int, first_order_at: datetime | None,
                    last_order_at: datetime | None, reactivated_at: datetime | None,
                    now: datetime, conv: Conventions) -> str | None:
    if order_count == 0 or last_order_at is None:
        return None
    rhythm = rhythm_days(order_count, first_order_at, last_order_at, conv)
    recency = max((now - last_order_at).total_seconds() / DAY, 0.0)
    if recency > conv.churned_after * rhythm:
        return "churned"
    if recency > conv.lapsed_after * rhythm:
        return "lapsed"
    if recency > conv.at_risk_after * rhythm:
        return "at_risk"
    if reactivated_at is not None and reactivated_at == last_order_at:
        return "reactivated"
    return "new" if order_count == 1 else "active"


def is_reactivation(order_count: int, first: datetime | None, last: datetime | None,
                    order_at: datetime, conv: Conventions) -> bool:
    """Does an order at `order_at` end a lapse (a gap beyond lapsed_after x the rhythm)?"""
    if order_count == 0 or last is None or order_at <= last:
        return False
    gap = (order_at - last).total_seconds() / DAY
    return gap > conv.lapsed_after * rhythm_days(order_count, first, last, conv)
