"""Treated against held-out customers: a difference of proportions and of means, with 95 %
intervals (journey's holdout uplift, profile's `uplift.crm`).

Difference of two proportions: Newcombe's hybrid score interval (Newcombe 1998, method 10):
Wilson score intervals of each rate combined, which stays informative for small or extreme
groups (the Wald interval collapses to [0, 0] when both rates are 0 or 1). Difference of two
means (revenue per customer): Welch's t interval.
"""

from __future__ import annotations

import math
from typing import Any

from scipy.stats import t as student_t

Z95 = 1.959963984540054


def conversion(converted: int, total: int) -> float | None:
    return converted / total if total else None


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for one proportion (no continuity correction)."""
    p = successes / n
    centre = 2 * n * p + z * z
    spread = z * math.sqrt(z * z + 4 * n * p * (1 - p))
    den = 2 * (n + z * z)
    return max(0.0, (centre - spread) / den), min(1.0, (centre + spread) / den)


def newcombe(treated: tuple[int, int], holdout: tuple[int, int],
             z: float = Z95) -> tuple[float, float] | None:
    """95 % interval for rate(treated) - rate(holdout); None when a group is empty."""
    (x1, n1), (x2, n2) = treated, holdout
    if not n1 or not n2:
        return None
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    diff = p1 - p2
    return (diff - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
            diff + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def uplift(treated: tuple[int, int], holdout: tuple[int, int]) -> dict[str, Any]:
    """(converted, total) per group -> uplift = rate(treated) - rate(holdout), its Newcombe
    95 % interval, and the holdout's size (None figures when a group is empty)."""
    rt, rh = conversion(*treated), conversion(*holdout)
    interval = newcombe(treated, holdout)
    if rt is None or rh is None or interval is None:
        return {"uplift": None, "ci95": None, "ci_method": "newcombe",
                "holdout_size": holdout[1]}
    return {"uplift": round(rt - rh, 6), "ci95": [round(interval[0], 6), round(interval[1], 6)],
            "ci_method": "newcombe", "holdout_size": holdout[1]}


def welch(treated: tuple[float, float, int], holdout: tuple[float, float, int],
          level: float = 0.95) -> dict[str, Any]:
    """(mean, sample variance, n) per group -> difference of means with Welch's interval
    (Welch-Satterthwaite degrees of freedom); None figures when a group has fewer than 2."""
    (m1, v1, n1), (m2, v2, n2) = treated, holdout
    if n1 < 2 or n2 < 2:
        return {"difference": None, "ci95": None, "df": None}
    a, b = v1 / n1, v2 / n2
    diff = m1 - m2
    if a + b == 0:
        return {"difference": round(diff, 6), "ci95": [round(diff, 6), round(diff, 6)],
                "df": None}
    df = (a + b) ** 2 / (a * a / (n1 - 1) + b * b / (n2 - 1))
    half = float(student_t.ppf(0.5 + level / 2, df)) * math.sqrt(a + b)
    return {"difference": round(diff, 6), "ci95": [round(diff - half, 6), round(diff + half, 6)],
            "df": round(df, 3)}
