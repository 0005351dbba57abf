from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from services.journey.domain.conditions import condition_adapter, evaluate

DATA = {"event": {"event": "Order Completed", "properties": {"total": 79.5, "tags": ["vip"],
                                                             "at": "2026-11-20T10:00:00Z"}},
        "profile": {"traits": {"plan": "pro", "age": "41"}, "email": "a@example.com"}}


def cond(tree: dict):
    return condition_adapter.validate_python(tree)


@pytest.mark.parametrize(("tree", "expected"), [
    ({"field": "event.properties.total", "op": "gte", "value": 50}, True),
    ({"field": "event.properties.total", "op": "lt", "value": 50}, False),
    ({"field": "profile.traits.plan", "op": "in", "value": ["pro", "team"]}, True),
    ({"field": "profile.traits.age", "op": "gt", "value": 40}, True),
    ({"field": "event.properties.tags", "op": "contains", "value": "vip"}, True),
    ({"field": "profile.traits.missing", "op": "exists"}, False),
    ({"field": "profile.email", "op": "exists"}, True),
    ({"field": "profile.traits.missing", "op": "neq", "value": "x"}, True),
    ({"field": "profile.traits.plan", "op": "gt", "value": 3}, False),  # type mismatch: no match
    ({"all": [{"field": "profile.traits.plan", "op": "eq", "value": "pro"},
              {"not": {"field": "event.properties.total", "op": "lt", "value": 10}}]}, True),
    ({"any": [{"field": "profile.traits.plan", "op": "eq", "value": "free"},
              {"field": "event.event", "op": "eq", "value": "Order Completed"}]}, True),
    ({"field": "event.properties.at", "op": "within_last", "value": "P7D"}, True),
    ({"field": "event.properties.at", "op": "within_last", "value": "P1D"}, False),
])
def test_evaluate(tree: dict, expected: bool) -> None:
    now = datetime(2026, 11, 23, tzinfo=UTC)
    assert evaluate(cond(tree), DATA, now) is expected


@pytest.mark.parametrize("tree", [
    {"field": "customer.x", "op": "eq", "value": 1},  # only event.* and profile.*
    {"field": "event.x", "op": "matches", "value": ".*"},  # unknown op
    {"all": []},
    {"field": "event.x", "op": "eq", "value": 1, "code": "__import__('os')"},
])
def test_invalid_trees_are_rejected(tree: dict) -> None:
    with pytest.raises(ValidationError):
        cond(tree)
