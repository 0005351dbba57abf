"""Condition trees: all/any/not over typed comparisons (shared.conditions). Never eval'd."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from services.journey.domain.dates import is_anniversary
from services.journey.domain.timing import zone
from shared.conditions import MISSING, Evaluable, Op, compare, lookup

FIELD_PATTERN = r"^(event|profile)(\.[A-Za-z0-9_\-$ ]+)+$"


class Comparison(Evaluable):
    model_config = ConfigDict(extra="forbid")
    field: str = Field(pattern=FIELD_PATTERN, description="`event.*` or `profile.*` path.")
    op: Op | Literal["anniversary"] = Field(
        description="`anniversary`: the field's month and day are today's in the customer's "
                    "zone (`value`: days ahead, default 0).")
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



def evaluate(cond: Condition, data: dict[str, Any], now: datetime | None = None) -> bool:
    """True when `data` ({"event": ..., "profile": ...}) satisfies `cond`."""
    if isinstance(cond, All):
        return all(evaluate(c, data, now) for c in cond.all)
    if isinstance(cond, AnyOf):
        return any(evaluate(c, data, now) for c in cond.any)
    if isinstance(cond, Not):
        return not evaluate(cond.not_, data, now)
    if cond.op == "anniversary":
        profile = data.get("profile")
        tz = zone(profile.get("timezone") if isinstance(profile, dict) else None)
        return is_anniversary(lookup(data, cond.field), now or datetime.now(tz), tz, cond.value)
    return compare(cond.op, lookup(data, cond.field), cond.value, now)


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
        out[path] = None if value is MISSING else value
    return out
