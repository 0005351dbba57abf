import json
from pathlib import Path

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
