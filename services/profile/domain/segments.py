"""Segment rules: the journeys' JSON condition tree plus event aggregates (pure).

A rule is `{"all": [...]}`, `{"any": [...]}`, `{"not": ...}`, a comparison
`{"field": "profile.metrics.order_count", "op": "gte", "value": 2}` (same ops and semantics
as journey conditions), or an event aggregate
`{"performed": {"event": "Order Completed", "op": "gte", "count": 2, "within": "P90D"}}`
(optional `properties`: equality filters on the event's properties).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from shared.conditions import Duration, Evaluable, Op, compare, lookup

CountOp = Literal["eq", "neq", "gt", "gte", "lt", "lte"]
PROFILE_FIELD = r"^profile(\.[A-Za-z0-9_\-$ ]+)+$"


class Comparison(Evaluable):
    model_config = ConfigDict(extra="forbid")
    field: str = Field(pattern=PROFILE_FIELD, max_length=300,
                       description="`profile.traits.*`, `profile.metrics.*`, `profile.*`.")
    op: Op
    value: Any = None


class Aggregate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event: str = Field(min_length=1, max_length=200)
    op: CountOp = "gte"
    count: int = Field(default=1, ge=0, le=1_000_000)
    within: Duration | None = Field(default=None, description="ISO-8601 duration, e.g. P90D "
                                                                "(at most 100 years).")
    properties: dict[str, str | int | float | bool] = Field(default_factory=dict, max_length=10)

    def key(self) -> str:
        """Identity of the counted quantity (op and threshold aside)."""
        within = self.within.total_seconds() if self.within else None
        return json.dumps([self.event, within, self.properties], sort_keys=True)


class Performed(BaseModel):
    model_config = ConfigDict(extra="forbid")
    performed: Aggregate


class All(BaseModel):
    model_config = ConfigDict(extra="forbid")
    all: list[Rule] = Field(min_length=1, max_length=50)


class AnyOf(BaseModel):
    model_config = ConfigDict(extra="forbid")
    any: list[Rule] = Field(min_length=1, max_length=50)


class Not(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    not_: Rule = Field(alias="not")


Rule = Annotated[Comparison | Performed | All | AnyOf | Not, Field(union_mode="left_to_right")]
for _model in (All, AnyOf, Not):
    _model.model_rebuild()
rule_adapter: TypeAdapter[Rule] = TypeAdapter(Rule)


def aggregates(rule: Rule) -> list[Aggregate]:
    """Every event aggregate in the rule (what the store must count)."""
    if isinstance(rule, Performed):
        return [rule.performed]
    if isinstance(rule, All | AnyOf):
        return [a for r in (rule.all if isinstance(rule, All) else rule.any)
                for a in aggregates(r)]
    if isinstance(rule, Not):
        return aggregates(rule.not_)
    return []


def is_time_based(rule: Rule) -> bool:
    """Can membership change with nothing but time passing? Then it's re-evaluated on schedule."""
    if isinstance(rule, Performed):
        return rule.performed.within is not None
    if isinstance(rule, All | AnyOf):
        return any(is_time_based(r) for r in (rule.all if isinstance(rule, All) else rule.any))
    if isinstance(rule, Not):
        return is_time_based(rule.not_)
    return rule.op == "within_last" or ".metrics." in rule.field or rule.field in (
        "profile.lifecycle_stage", "profile.rfm_segment")


def matches(rule: Rule, profile: dict[str, Any], counts: dict[str, int], now: datetime) -> bool:
    """Does the profile ({"traits", "metrics", ...}) with these aggregate counts satisfy it?"""
    if isinstance(rule, All):
        return all(matches(r, profile, counts, now) for r in rule.all)
    if isinstance(rule, AnyOf):
        return any(matches(r, profile, counts, now) for r in rule.any)
    if isinstance(rule, Not):
        return not matches(rule.not_, profile, counts, now)
    if isinstance(rule, Performed):
        return compare(rule.performed.op, counts.get(rule.performed.key(), 0),
                        rule.performed.count, now)
    return compare(rule.op, lookup({"profile": profile}, rule.field), rule.value, now)
