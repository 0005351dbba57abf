"""`wait.until_field` and the `anniversary` condition, on virtual time."""

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from services.journey.domain.dates import as_datetime, is_anniversary
from services.journey.domain.document import JourneyDocument
from services.journey.domain.simulate import SimEvent, simulate

START = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
PARIS = ZoneInfo("Europe/Paris")


def doc(wait: Any, **extra: Any) -> dict[str, Any]:
    return {"key": "refill", "name": "Refill", "stages": [{
        "key": "ordered", "enter": {"event": "Order Completed"}, "steps": [
            {"id": "until", "wait": wait},
            {"id": "remind", "send": {"channel": "email", "template": "refill"}, "next": "end"},
            {"id": "unknown", "send": {"channel": "email", "template": "generic"}}]}], **extra}


def run(document: dict[str, Any], profile: dict[str, Any]) -> dict[str, Any]:
    timeline = [SimEvent("e1", START, "Order Completed", {})]
    return simulate(JourneyDocument.model_validate(document),
                    {"profile_id": "p1", "email": "a@example.com"} | profile, timeline,
                    start=START, horizon=timedelta(days=90))


def test_wait_until_a_profile_date_with_an_offset() -> None:
    due = START + timedelta(days=30)
    result = run(doc({"until_field": "profile.metrics.next_order_expected_at",
                      "offset": "-P3D"}), {"metrics": {"next_order_expected_at": due.isoformat()}})
    assert [(s["template"], s["at"]) for s in result["sends"]] == [
        ("refill", due - timedelta(days=3))]
    wait = next(t for t in result["trace"] if t["kind"] == "wait")
    assert wait["detail"]["field"] == "profile.metrics.next_order_expected_at"


@pytest.mark.parametrize("metrics", [{}, {"next_order_expected_at": None},
                                     {"next_order_expected_at": "soon"},
                                     {"next_order_expected_at": 42}])
def test_a_missing_or_invalid_date_takes_the_defined_path(metrics: dict[str, Any]) -> None:
    field = {"until_field": "profile.metrics.next_order_expected_at"}
    ended = run(doc(field), {"metrics": metrics})
    assert ended["sends"] == []
    skipped = next(t for t in ended["trace"] if t["kind"] == "wait")
    assert skipped["outcome"] == "skipped" and skipped["detail"] == {"to": "end"}
    assert skipped["reason"].startswith("profile.metrics.next_order_expected_at: ")
    routed = run(doc(field | {"missing": "unknown"}), {"metrics": metrics})
    assert [s["template"] for s in routed["sends"]] == ["generic"]


def test_a_past_date_goes_on_at_once() -> None:
    result = run(doc({"until_field": "profile.traits.renews_on"}),
                 {"traits": {"renews_on": "2026-01-01"}})
    assert [(s["template"], s["at"]) for s in result["sends"]] == [("refill", START)]
    assert any(t["kind"] == "wait" and t["outcome"] == "passed" for t in result["trace"])


def test_until_field_is_validated() -> None:
    with pytest.raises(ValidationError, match="wait.missing: unknown step 'nowhere'"):
        JourneyDocument.model_validate(doc({"until_field": "profile.metrics.x",
                                            "missing": "nowhere"}))
    with pytest.raises(ValidationError):
        JourneyDocument.model_validate(doc({"until_field": "metrics.x"}))
    with pytest.raises(ValidationError):
        JourneyDocument.model_validate(doc({"until_field": "profile.x", "colour": 1}))
    with pytest.raises(ValidationError, match="duration must be positive"):
        JourneyDocument.model_validate(doc("-P1D"))


def test_dates_read_from_profiles() -> None:
    assert as_datetime("2026-03-01", PARIS) == datetime(2026, 2, 28, 23, 0, tzinfo=UTC)
    assert as_datetime("2026-03-01T10:00:00Z", PARIS) == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert as_datetime("2026-03-01T10:00:00", UTC) == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert as_datetime("not a date", UTC) is None and as_datetime(7, UTC) is None


@pytest.mark.parametrize(("born", "today", "expected"), [
    ("1990-11-20", datetime(2026, 11, 20, 10, tzinfo=UTC), True),
    ("1990-11-21", datetime(2026, 11, 20, 10, tzinfo=UTC), False),
    ("2026-11-20", datetime(2026, 11, 20, 10, tzinfo=UTC), False),  # not its own anniversary
    ("1992-02-29", datetime(2027, 2, 28, 10, tzinfo=UTC), True),  # no Feb 29 in 2027
    ("1992-02-29", datetime(2028, 2, 28, 10, tzinfo=UTC), False),  # 2028 has one
    ("1992-02-29", datetime(2028, 2, 29, 10, tzinfo=UTC), True),
    ("1990-11-21", datetime(2026, 11, 20, 23, 30, tzinfo=UTC), True),  # already 21st in Paris
    ("2020-11-20T23:30:00+00:00", datetime(2026, 11, 21, 9, tzinfo=UTC), True),  # Paris date
    ("garbage", datetime(2026, 11, 20, 10, tzinfo=UTC), False),
    (None, datetime(2026, 11, 20, 10, tzinfo=UTC), False),
])
def test_anniversary_in_the_customers_zone(born: Any, today: datetime, expected: bool) -> None:
    assert is_anniversary(born, today, PARIS) is expected


def test_anniversary_days_ahead_and_in_a_condition() -> None:
    assert is_anniversary("1990-11-23", START, PARIS, 3)
    assert not is_anniversary("1990-11-23", START, PARIS, "x")
    document = {"key": "bday", "name": "Birthday", "stages": [{
        "key": "known", "enter": {"event": "Checked"}, "steps": [
            {"id": "today", "branch": {"cases": [{"when": {
                "field": "profile.traits.birthday", "op": "anniversary"}, "next": "wish"}],
                "default": "end"}},
            {"id": "wish", "send": {"channel": "email", "template": "birthday"}}]}]}
    parsed = JourneyDocument.model_validate(document)
    for birthday, sends in (("1990-11-20", ["birthday"]), ("1990-11-19", [])):
        profile = {"profile_id": "p1", "email": "a@example.com", "timezone": "Europe/Paris",
                   "traits": {"birthday": birthday}}
        result = simulate(parsed, profile, [SimEvent("e", START, "Checked")], start=START,
                          horizon=timedelta(days=1))
        assert [s["template"] for s in result["sends"]] == sends
