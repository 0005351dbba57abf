"""What an event is worth: profile's order value and journey's goal value read it alike."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def revenue_value(properties: dict[str, Any], names: Iterable[str]) -> float:
    """The first of `names` whose property holds a number (a numeric string counts, a
    boolean does not); else 0."""
    for name in names:
        value = properties.get(name)
        if isinstance(value, bool) or value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):  # dicts and lists too
            continue
        if number == number and abs(number) < 1e12:  # not NaN, not absurd
            return number
    return 0.0
