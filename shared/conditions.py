"""The comparison semantics of condition trees, shared by journey rules and profile segments.

Pure: a typed comparison of one looked-up value, never `eval`. A type mismatch never matches
and never raises, so a bad value in one event cannot crash a consumer.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import TypeAdapter

Op = Literal["eq", "neq", "gt", "gte", "lt", "lte", "in", "contains", "exists", "within_last"]
MISSING: Any = object()  # what `lookup` returns for an absent path
_DATETIME = TypeAdapter(datetime)
_DURATION = TypeAdapter(timedelta)


def lookup(data: dict[str, Any], path: str) -> Any:
    """The value at a dotted path (`profile.traits.plan`), or MISSING."""
    current: Any = data
    for part in path.split("."):
        if not isinstance(current, dict) or part not in current:
            return MISSING
        current = current[part]
    return current


def compare(op: str, actual: Any, expected: Any, now: datetime | None = None) -> bool:
    """`actual <op> expected`; an absent or null `actual` only satisfies `neq` and
    `exists: false`. `within_last` takes an ISO-8601 duration and compares against `now`."""
    if op == "exists":
        present = actual is not MISSING and actual is not None
        return present if expected in (None, True) else not present
    if actual is MISSING or actual is None:
        return op == "neq"
    try:
        match op:
            case "eq":
                return bool(actual == expected)
            case "neq":
                return bool(actual != expected)
            case "gt":
                return _number(actual) > _number(expected)
            case "gte":
                return _number(actual) >= _number(expected)
            case "lt":
                return _number(actual) < _number(expected)
            case "lte":
                return _number(actual) <= _number(expected)
            case "in":
                return isinstance(expected, list) and actual in expected
            case "contains":
                return expected in actual if isinstance(actual, list | str) else False
            case "within_last":
                when = _DATETIME.validate_python(actual)
                reference = now or datetime.now(when.tzinfo)
                return reference - _DURATION.validate_python(expected) <= when <= reference
    except (TypeError, ValueError):
        return False
    return False


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError("booleans are not numbers")
    return float(value)
