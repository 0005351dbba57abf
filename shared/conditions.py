"""The comparison semantics of condition trees, shared by journey rules and profile segments.

Pure: a typed comparison of one looked-up value, never `eval`. A type mismatch never matches
and never raises, so a bad value in one event cannot crash a consumer.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    TypeAdapter,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)

Op = Literal["eq", "neq", "gt", "gte", "lt", "lte", "in", "contains", "exists", "within_last"]
MISSING: Any = object()  # what `lookup` returns for an absent path
_DATETIME = TypeAdapter(datetime)
_DURATION = TypeAdapter(timedelta)
# Bounds of what a rule may say: past them the arithmetic with `now` overflows (a 500 and a
# recompute that fails every pass) and no marketer meant it.
MAX_DURATION = timedelta(days=36525)  # 100 years
FIRST_YEAR, LAST_YEAR = 1970, 2200
# An ISO date or date-time (a real month and day, then the end or a time): a SKU or a
# number that merely starts with digits and dashes is not one.
_DATE_LIKE = re.compile(r"^(\d{4,})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])(?:$|[T ])")


STORED = {"stored": True}  # validation context for re-reading what was saved before


def is_stored(info: ValidationInfo | None) -> bool:
    """Re-reading a document saved before these bounds existed: accept it as it was (it
    failing to parse would stop a running journey or every segment of a workspace)."""
    return bool(info is not None and isinstance(info.context, dict)
                and info.context.get("stored"))


def bounded_duration(value: timedelta, info: ValidationInfo | None = None) -> timedelta:
    """A rule's duration: at most 100 years either way (pydantic reports the ValueError)."""
    if abs(value) > MAX_DURATION and not is_stored(info):
        raise ValueError("duration over 100 years")
    return value


def bounded_time(value: datetime, info: ValidationInfo | None = None) -> datetime:
    """A rule's (or a simulation's) date: within 1970-2200."""
    if not FIRST_YEAR <= value.year <= LAST_YEAR and not is_stored(info):
        raise ValueError(f"date outside {FIRST_YEAR}-{LAST_YEAR}")
    return value


def _duration(value: timedelta, info: ValidationInfo) -> timedelta:
    return bounded_duration(value, info)


def _time(value: datetime, info: ValidationInfo) -> datetime:
    return bounded_time(value, info)


# pydantic passes `info` (and with it the STORED context) to two-argument validators only.
Duration = Annotated[timedelta, AfterValidator(_duration)]
BoundedTime = Annotated[datetime, AfterValidator(_time), WithJsonSchema({
    "type": "string", "format": "date-time",
    "pattern": f"^(19[7-9][0-9]|2[01][0-9][0-9]|{LAST_YEAR})-",  # the year as written
    "description": f"A date-time in {FIRST_YEAR}-{LAST_YEAR}."})]


def check_comparison(op: str, value: Any, info: ValidationInfo | None = None) -> None:
    """Raise ValueError for a comparison no evaluation could do: a `within_last` that is not
    an ISO-8601 duration up to 100 years, or a date outside 1970-2200."""
    if is_stored(info):
        return
    if op == "within_last":
        try:
            duration = _DURATION.validate_python(value)
        except ValueError as exc:
            raise ValueError("within_last takes an ISO-8601 duration, e.g. P30D") from exc
        if duration <= timedelta(0):
            raise ValueError("within_last: duration must be positive")
        bounded_duration(duration)
        return
    for item in value if isinstance(value, list) else [value]:
        found = _DATE_LIKE.match(item) if isinstance(item, str) else None
        if found:
            if not FIRST_YEAR <= int(found.group(1)) <= LAST_YEAR:
                raise ValueError(f"date outside {FIRST_YEAR}-{LAST_YEAR}")


class Evaluable(BaseModel):
    """The base of a comparison model (its `op` and `value` declared by the subclass): one
    no evaluation could do fails validation, so a bad duration or date is a 400 at save."""

    if TYPE_CHECKING:
        op: str
        value: Any

    @model_validator(mode="after")
    def _evaluable(self, info: ValidationInfo) -> Self:
        check_comparison(self.op, self.value, info)
        return self


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
    except (TypeError, ValueError, OverflowError):
        return False
    return False


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError("booleans are not numbers")
    return float(value)
