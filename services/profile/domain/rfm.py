"""RFM: 1-5 quintile scores per workspace and the standard segment names (pure).

A score is the quintile of the customer's value among the workspace's customers with at
least one order: score = ceil(5 * share of customers whose value is <= theirs), so ties share
a score. Recency scores the other way round (fewer days since the last order is better).
Segment names come from the widely used R x F grid (e.g. Putler's / Guillaume Martin's map).
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass

_GRID = [  # (R regex, F regex) -> name; first match wins
    (r"[1-2]", r"[1-2]", "Hibernating"),
    (r"[1-2]", r"[3-4]", "At Risk"),
    (r"[1-2]", r"5", "Can't Lose Them"),
    (r"3", r"[1-2]", "About To Sleep"),
    (r"3", r"3", "Need Attention"),
    (r"[3-4]", r"[4-5]", "Loyal"),
    (r"4", r"1", "Promising"),
    (r"5", r"1", "New Customers"),
    (r"[4-5]", r"[2-3]", "Potential Loyalists"),
    (r"5", r"[4-5]", "Champions"),
]
SEGMENTS = tuple(name for _r, _f, name in _GRID)


@dataclass(frozen=True)
class Customer:
    profile_id: str
    recency_days: float
    frequency: int
    monetary: float


@dataclass(frozen=True)
class Score:
    r: int
    f: int
    m: int

    @property
    def segment(self) -> str:
        return segment_name(self.r, self.f)


def segment_name(r: int, f: int) -> str:
    for r_pat, f_pat, name in _GRID:
        if re.fullmatch(r_pat, str(r)) and re.fullmatch(f_pat, str(f)):
            return name
    raise ValueError(f"scores out of range: {r}{f}")


def quintile(sorted_values: list[float], value: float) -> int:
    """ceil(5 * share of values <= value), in 1..5."""
    at_or_below = bisect.bisect_right(sorted_values, value)
    return min(5, max(1, math.ceil(5 * at_or_below / len(sorted_values))))


def score_all(customers: list[Customer]) -> dict[str, Score]:
    if not customers:
        return {}
    recency = sorted(-c.recency_days for c in customers)
    frequency = sorted(float(c.frequency) for c in customers)
    monetary = sorted(c.monetary for c in customers)
    return {c.profile_id: Score(quintile(recency, -c.recency_days),
                                quintile(frequency, float(c.frequency)),
                                quintile(monetary, c.monetary))
            for c in customers}
