"""Goal conversion of treated customers against the holdout, with a confidence interval."""

from __future__ import annotations

import math
from typing import Any

Z95 = 1.959963984540054


def conversion(converted: int, total: int) -> float | None:
    return converted / total if total else None


def uplift(treated: tuple[int, int], holdout: tuple[int, int]) -> dict[str, Any]:
    """(converted, total) per group -> uplift = rate(treated) - rate(holdout) with a 95 %
    Wald interval for a difference of two proportions (None when a group is empty)."""
    rt, rh = conversion(*treated), conversion(*holdout)
    if rt is None or rh is None:
        return {"uplift": None, "ci95": None}
    se = math.sqrt(rt * (1 - rt) / treated[1] + rh * (1 - rh) / holdout[1])
    diff = rt - rh
    return {"uplift": round(diff, 6),
            "ci95": [round(diff - Z95 * se, 6), round(diff + Z95 * se, 6)]}
