import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from services.journey.domain.document import JourneyDocument

EXAMPLE = json.loads((Path(__file__).parents[2] / "services/journey/examples/"
                      "post-purchase-review.json").read_text())


def test_issue_example_is_accepted() -> None:
    doc = JourneyDocument.model_validate(EXAMPLE)
    assert doc.stages[0].steps[0].wait.total_seconds() == 2
    assert doc.stages[0].steps[2].wait_for.else_ == "nudge"


def _error(doc: dict) -> str:
    with pytest.raises(ValidationError) as info:
        JourneyDocument.model_validate(doc)
    return str(info.value)


def test_errors_name_the_path_and_reason() -> None:
    bad_step = json.loads(json.dumps(EXAMPLE))
    bad_step["stages"][0]["steps"][1] = {"id": "ask", "send": {"channel": "fax", "template": "x"}}
    assert "stages.0.steps.1.send.channel" in _error(bad_step)

    dangling = json.loads(json.dumps(EXAMPLE))
    dangling["stages"][0]["steps"][2]["wait_for"]["then"] = "nowhere"
    assert "unknown step 'nowhere'" in _error(dangling)

    two_kinds = json.loads(json.dumps(EXAMPLE))
    two_kinds["stages"][0]["steps"][0]["exit"] = True
    assert "exactly one of" in _error(two_kinds)

    bad_duration = json.loads(json.dumps(EXAMPLE))
    bad_duration["stages"][0]["steps"][0]["wait"] = "two seconds"
    assert "stages.0.steps.0.wait" in _error(bad_duration)

    unknown_field = json.loads(json.dumps(EXAMPLE))
    unknown_field["stages"][0]["colour"] = "red"
    assert "stages.0.colour" in _error(unknown_field)


def _mutated(path: list[Any], value: Any) -> dict:
    doc = json.loads(json.dumps(EXAMPLE))
    target = doc
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return doc


@pytest.mark.parametrize(("path", "value", "expected"), [
    (["stages", 0, "steps", 0, "wait"], "-PT5S", "stages.0.steps.0.wait\n  Value error, "
                                                 "duration must be positive"),
    (["stages", 0, "steps", 1, "id"], "settle", "stages.0.steps.1.id: duplicate or reserved "
                                                "step id 'settle'"),
    (["stages", 1, "key"], "purchased", "stages.1.key: duplicate stage key 'purchased'"),
    (["stages", 0, "steps", 3, "next"], "gone", "stages.0.steps.3.next: unknown step 'gone' in "
                                                "stage 'purchased'"),
    (["stages", 0, "steps", 0], {"id": "s", "split": [{"percent": 70, "next": "ask"},
                                                      {"percent": 40, "next": "ask"}]},
     "split percents add up to more than 100"),
    (["goal"], {"stage": "nowhere"}, "goal.stage: unknown stage 'nowhere'"),
    (["goal"], {"event": "A", "stage": "reviewed"}, "goal\n  Value error, give exactly one of "
                                                    "event, stage"),
    (["stages", 0, "enter"], {"where": {"field": "event.x", "op": "eq", "value": 1}},
     "give exactly one of event, condition"),
    (["stages", 0, "enter", "where"], {"field": "order.total", "op": "gte", "value": 1},
     "String should match pattern"),
    (["stages", 0, "enter", "where"], {"field": "event.total", "op": "matches", "value": 1},
     "stages.0.enter.where"),
    (["quiet_hours"], {"start": "21:00", "end": "21:00"}, "start and end must differ"),
    (["quiet_hours"], {"start": "25:00", "end": "09:00"}, "quiet_hours.start"),
    (["frequency_cap"], {"email": {"max": 0, "per": "P1D"}}, "frequency_cap.email.max"),
    (["holdout_percent"], 120, "holdout_percent\n  Input should be less than or equal to 100"),
    (["reentry"], "sometimes", "reentry\n  Input should be 'once', 'after_exit' or 'always'"),
    (["instance_key"], "order_id", "instance_key\n  String should match pattern"),
    (["stages", 0, "steps", 2, "wait_for", "timeout"], "PT0S", "duration must be positive"),
    (["stages", 0, "steps", 0], {"id": "s", "wait_until": {"time": "9am"}},
     "stages.0.steps.0.wait_until.time"),
    (["stages", 0, "steps", 0], {"id": "s", "webhook": {"url": "ftp://x"}},
     "stages.0.steps.0.webhook.url"),
    (["stages"], [], "stages\n  List should have at least 1 item"),
])
def test_each_error_class_names_its_path_and_reason(path: list[Any], value: Any,
                                                    expected: str) -> None:
    assert expected in _error(_mutated(path, value))
