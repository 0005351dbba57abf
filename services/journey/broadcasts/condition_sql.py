"""A condition tree as SQL over a profile snapshot (jsonb), so that a `condition` audience
is a query, not a walk in Python.

SQL and Python (shared.conditions.compare) agree on most comparisons but not all (a
number compared with a numeric string, `within_last`, `anniversary`). So each node
compiles to two predicates: `loose`, true wherever Python says true (a superset), and
`tight`, true only where Python says true (a subset). Where they are the same the node
is exact. Rows where `loose` holds and `tight` does not are the only ones Python must
decide (broadcasts/audience.py); for most trees there are none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from services.journey.domain.conditions import All, AnyOf, Comparison, Condition, Not


class Params:
    """Positional parameters of one statement ($1, $2, ...)."""

    def __init__(self) -> None:
        self.args: list[Any] = []

    def __call__(self, value: Any, cast: str) -> str:
        self.args.append(value)
        return f"${len(self.args)}::{cast}"


@dataclass(frozen=True)
class Bounds:
    loose: str
    tight: str

    @property
    def exact(self) -> bool:
        return self.loose == self.tight


TRUE, FALSE = "true", "false"
_INEXACT = Bounds(TRUE, FALSE)


def _same(sql: str) -> Bounds:
    return Bounds(sql, sql)


def _json(p: Params, value: Any) -> str:
    return p(orjson.dumps(value).decode(), "text") + "::jsonb"


def value_at(p: Params, column: str, field: str) -> str | None:
    """The jsonb at a `profile.*` path (NULL where Python's lookup finds nothing: `->`
    with a text key is NULL on an array or a scalar, as lookup is MISSING there); None for
    an `event.*` path, which a broadcast never has."""
    root, *parts = field.split(".")
    if root != "profile":
        return None
    return "(" + column + "".join(f" -> {p(part, 'text')}" for part in parts) + ")"


def compile_condition(cond: Condition, p: Params, column: str) -> Bounds:
    if isinstance(cond, All | AnyOf):
        parts = [compile_condition(c, p, column) for c in (
            cond.all if isinstance(cond, All) else cond.any)]
        glue = " AND " if isinstance(cond, All) else " OR "
        return Bounds("(" + glue.join(b.loose for b in parts) + ")",
                      "(" + glue.join(b.tight for b in parts) + ")")
    if isinstance(cond, Not):
        inner = compile_condition(cond.not_, p, column)
        return Bounds(f"(NOT {inner.tight})", f"(NOT {inner.loose})")
    return _comparison(cond, p, column)


def _comparison(cond: Comparison, p: Params, column: str) -> Bounds:
    op, expected = cond.op, cond.value
    v = value_at(p, column, cond.field)
    if v is None:  # always missing: only `neq` and `exists: false` hold
        return _same(TRUE if op == "neq" or (op == "exists" and expected not in (None, True))
                     else FALSE)
    present = f"coalesce({v} <> 'null'::jsonb, false)"
    if op == "exists":
        return _same(present if expected in (None, True) else f"(NOT {present})")
    if op in ("eq", "neq"):
        if expected is None:  # null or missing never equals; anything else differs
            return _same(FALSE if op == "eq" else TRUE)
        equal = f"coalesce({v} = {_json(p, expected)}, false)"
        # jsonb equality of strings is Python's; of numbers it is stricter (true == 1 in
        # Python), so for those it is only the tight side of eq.
        eq = _same(equal) if isinstance(expected, str) else Bounds(present, equal)
        return eq if op == "eq" else Bounds(f"(NOT {eq.tight})", f"(NOT {eq.loose})")
    if op == "in":
        if not isinstance(expected, list):
            return _same(FALSE)
        member = (f"coalesce({v} = ANY({p([orjson.dumps(x).decode() for x in expected], 'text[]')}"
                  f"::jsonb[]), false)")
        return _same(member) if all(isinstance(x, str) for x in expected) \
            else Bounds(present, member)
    if op == "contains":
        if isinstance(expected, str):
            text = p(expected, "text")
            return _same(f"(CASE jsonb_typeof({v}) WHEN 'string' THEN strpos({v} #>> '{{}}', "
                         f"{text}) > 0 WHEN 'array' THEN {v} ? {text} ELSE false END)")
        return Bounds(f"coalesce(jsonb_typeof({v}) = 'array', false)", FALSE)
    if op in ("gt", "gte", "lt", "lte"):
        if isinstance(expected, bool) or not isinstance(expected, int | float):
            return Bounds(present, FALSE) if isinstance(expected, str) else _same(FALSE)
        sign = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
        number = (f"(CASE WHEN jsonb_typeof({v}) = 'number' THEN ({v})::numeric {sign} "
                  f"{p(str(expected), 'numeric')} ELSE false END)")
        # Python also compares a numeric string ("5" > 3): such rows are Python's to decide.
        return Bounds(f"({number} OR coalesce(jsonb_typeof({v}) = 'string', false))", number)
    return Bounds(present, FALSE) if op == "within_last" else _INEXACT  # anniversary
