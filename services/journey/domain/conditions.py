"""Condition trees: all/any/not over typed comparisons. Evaluated, never eval'd."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

Op = Literal["eq", "neq", "gt", "gte", "lt", "lte", "in", "contains", "exists", "within_last"]
FIELD_PATTERN = r"^(event|profile)(\.[A-Za-z0-9_\-$ ]+)+$"


class Comparison(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str = Field(pattern=FIELD_PATTERN, description="`event.*` or `profile.*` path.")
    op: Op
    value: Any = None


class All(BaseModel):
    model_config = ConfigDict(extra="forbid")
    all: list[Condition] = Field(min_length=1)


class AnyOf(BaseModel):
    model_config = ConfigDict(extra="forbid")
    any: list[Condition] = Field(min_length=1)


class Not(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    not_: Condition = Field(alias="not")


Condition = Annotated[Comparison | All | AnyOf | Not, Field(union_mode="left_to_right")]
for _model in (All, AnyOf, Not):
    _model.model_rebuild()
condition_adapter: TypeAdapter[Condition] = TypeAdapter(Condition)

_MISSING = object()
MISSING = _MISSING  # what `lookup` returns for an absent path


def lookup(data: dict[str, Any], path: str) -> Any:
    current: Any = data
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        else:
            return _MISSING
    return current


def evaluate(cond: Condition, data: dict[str, Any], now: datetime | None = None) -> bool:
    """True when `data` ({"event": ..., "profile": ...}) satisfies `cond`."""
    if isinstance(cond, All):
        return all(evaluate(c, data, now) for c in cond.all)
    if isinstance(cond, AnyOf):
        return any(evaluate(c, data, now) for c in cond.any)
    if isinstance(cond, Not):
        return not evaluate(cond.not_, data, now)
    return _compare(cond, lookup(data, cond.field), now)


def _compare(cond: Comparison, actual: Any, now: datetime | None) -> bool:
    if cond.op == "exists":
        present = actual is not _MISSING and actual is not None
        return present if cond.value in (None, True) else not present
    if actual is _MISSING or actual is None:
        return cond.op == "neq"
    expected = cond.value
    try:
        match cond.op:
            case "eq":
                return bool(actual == expected)
            case "neq":
                return bool(actual != expected)
            case "gt":
                return bool(_num(actual) > _num(expected))
            case "gte":
                return bool(_num(actual) >= _num(expected))
            case "lt":
                return bool(_num(actual) < _num(expected))
            case "lte":
                return bool(_num(actual) <= _num(expected))
            case "in":
                return isinstance(expected, list) and actual in expected
            case "contains":
                return expected in actual if isinstance(actual, list | str) else False
            case "within_last":
                when = TypeAdapter(datetime).validate_python(actual)
                window = TypeAdapter(timedelta).validate_python(expected)
                reference = now or datetime.now(when.tzinfo)
                return reference - window <= when <= reference
    except (TypeError, ValueError):
        return False  # a type mismatch never matches; it never crashes the engine
    return False


def _num(value: Any) -> Any:
    if isinstance(value, bool):
        raise TypeError("booleans are not numbers")
    if isinstance(value, str):
        return float(value)
    return value


def fields_of(cond: Condition) -> list[str]:
    """Every field a condition reads, in order, once."""
    if isinstance(cond, All):
        return list(dict.fromkeys(f for c in cond.all for f in fields_of(c)))
    if isinstance(cond, AnyOf):
        return list(dict.fromkeys(f for c in cond.any for f in fields_of(c)))
    if isinstance(cond, Not):
        return fields_of(cond.not_)
    return [cond.field]


def seen_values(cond: Condition, data: dict[str, Any]) -> dict[str, Any]:
    """The values a condition saw, for the decision trace (missing fields show as null)."""
    out = {}
    for path in fields_of(cond):
        value = lookup(data, path)
        out[path] = None if value is _MISSING else value
    return out
