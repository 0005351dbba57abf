import json

import pytest
from pydantic import ValidationError

from services.journey.domain.document import JourneyDocument
from services.journey.domain.engine import idempotency_key, matching_entries, run_from_start

EXAMPLE = json.loads("""{
  "key": "post-purchase-review", "name": "Review request after purchase",
  "instance_key": "event.properties.order_id",
  "stages": [
    {"key": "purchased",
     "enter": {"event": "Order Completed",
               "where": {"field": "event.properties.total", "op": "gte", "value": 50}},
     "steps": [
       {"id": "settle", "wait": "PT2S"},
       {"id": "ask", "send": {"channel": "email", "template": "review-request"}},
       {"id": "listen", "wait_for": {"event": "Review Submitted", "timeout": "P5D",
                                     "then": "thanks", "else": "nudge"}},
       {"id": "nudge", "send": {"channel": "sms", "template": "review-nudge"}, "next": "end"},
       {"id": "thanks", "send": {"channel": "email", "template": "review-thanks"}}
     ]},
    {"key": "reviewed", "enter": {"event": "Review Submitted"}}
  ],
  "exit_when": [{"event": "Order Refunded"}],
  "goal": {"event": "Review Submitted", "within": "P14D"},
  "reentry": "after_exit", "holdout_percent": 10,
  "frequency_cap": {"email": {"max": 3, "per": "P7D"}},
  "quiet_hours": {"start": "21:00", "end": "09:00"}
}""")


def test_issue_example_is_accepted() -> None:
    doc = JourneyDocument.model_validate(EXAMPLE)
    assert doc.stages[0].steps[0].wait.total_seconds() == 2
    assert doc.stages[0].steps[2].wait_for.else_ == "nudge"


def test_instances_per_order_and_where_filter() -> None:
    doc = JourneyDocument.model_validate(EXAMPLE)
    big = {"event": {"event": "Order Completed", "properties": {"order_id": "o-1", "total": 80}}}
    small = {"event": {"event": "Order Completed", "properties": {"order_id": "o-2", "total": 20}}}
    [entry] = matching_entries(doc, big)
    assert (entry.stage.key, entry.instance_key) == ("purchased", "o-1")
    assert matching_entries(doc, small) == []


def test_leading_sends_run_and_stop_at_first_wait() -> None:
    doc = JourneyDocument.model_validate(EXAMPLE)
    progress = run_from_start(doc.stages[0])
    assert progress.sends == [] and progress.waiting_at == "settle"
    welcome = JourneyDocument.model_validate({"key": "w", "name": "W", "stages": [
        {"key": "s", "enter": {"event": "Signed Up"}, "steps": [
            {"id": "a", "send": {"channel": "email", "template": "t1"}, "next": "c"},
            {"id": "b", "send": {"channel": "email", "template": "never"}},
            {"id": "c", "send": {"channel": "email", "template": "t2"}},
            {"id": "d", "wait": "P1D"}]}]})
    progress = run_from_start(welcome.stages[0])
    assert [s for s, _ in progress.sends] == ["a", "c"] and progress.waiting_at == "d"


def test_idempotency_key_is_stable() -> None:
    key = idempotency_key("w", "j", 1, "p", "e", "s")
    assert key == idempotency_key("w", "j", 1, "p", "e", "s")
    assert key != idempotency_key("w", "j", 2, "p", "e", "s")


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
