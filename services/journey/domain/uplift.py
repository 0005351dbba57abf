"""Goal conversion of treated customers against the holdout: the intervals live in
shared/uplift.py (profile's `uplift.crm` uses them too); what a goal event is worth here."""

from __future__ import annotations

from typing import Any

from shared.revenue import revenue_value
from shared.uplift import Z95, conversion, newcombe, uplift, welch, wilson

__all__ = ["Z95", "conversion", "goal_value", "newcombe", "uplift", "welch", "wilson"]


def goal_value(properties: dict[str, Any], names: tuple[str, ...] | list[str]) -> float:
    """What a goal event is worth: the first of profile's `revenue_properties` holding a
    number (a numeric string counts, as in profile's order value); else 0."""
    return revenue_value(properties, names)
