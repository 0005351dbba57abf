from datetime import UTC, datetime, timedelta

from services.journey.domain.document import JourneyDocument
from services.journey.domain.guards import check_send, reachable
from services.journey.domain.state import Facts
from services.journey.domain.timing import iso_duration, next_local_time, quiet_until, zone
from services.journey.domain.uplift import uplift

PARIS = zone("Europe/Paris")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def test_quiet_hours_across_midnight_in_the_customers_zone() -> None:
    # 22:30 in Paris (21:30 UTC in winter): quiet until 09:00 Paris next morning.
    assert quiet_until(at("2026-11-20T21:30:00+00:00"), PARIS, "21:00", "09:00") == \
        at("2026-11-21T09:00:00+01:00")
    # 07:00 Paris: quiet until 09:00 the same morning.
    assert quiet_until(at("2026-11-21T07:00:00+01:00"), PARIS, "21:00", "09:00") == \
        at("2026-11-21T09:00:00+01:00")
    # 12:00 Paris is fine; the same instant is 06:00 in New York, which is quiet.
    noon = at("2026-11-21T12:00:00+01:00")
    assert quiet_until(noon, PARIS, "21:00", "09:00") is None
    assert quiet_until(noon, zone("America/New_York"), "21:00", "09:00") == \
        at("2026-11-21T09:00:00-05:00")
    # A same-day window.
    assert quiet_until(at("2026-11-21T12:30:00+01:00"), PARIS, "12:00", "14:00") == \
        at("2026-11-21T14:00:00+01:00")


def test_unknown_zone_falls_back_to_utc() -> None:
    assert zone("Mars/Olympus").key == "UTC" and zone(None).key == "UTC"


def test_wait_until_local_time_and_weekdays() -> None:
    friday_noon = at("2026-11-20T12:00:00+01:00")  # a Friday
    assert next_local_time(friday_noon, PARIS, "10:00") == at("2026-11-21T10:00:00+01:00")
    assert next_local_time(friday_noon, PARIS, "18:00") == at("2026-11-20T18:00:00+01:00")
    assert next_local_time(friday_noon, PARIS, "10:00", ["mon"]) == \
        at("2026-11-23T10:00:00+01:00")
    # Across the spring DST change the wall-clock time is kept.
    before = at("2026-03-28T12:00:00+01:00")
    assert next_local_time(before, PARIS, "10:00") == at("2026-03-29T10:00:00+02:00")


DOC = JourneyDocument.model_validate({
    "key": "g", "name": "G", "stages": [{"key": "s", "enter": {"event": "E"}}],
    "frequency_cap": {"email": {"max": 2, "per": "P1D"}},
    "quiet_hours": {"start": "21:00", "end": "09:00"}})
PROFILE = {"profile_id": "p", "email": "a@example.com", "reachable": {"email": True}}


def test_guard_order_holdout_reachability_quiet_hours_caps() -> None:
    now = at("2026-11-20T12:00:00+00:00")
    facts = Facts(now=now, profile=PROFILE, tz=zone("UTC"))
    assert check_send(DOC, "email", True, facts).outcome == "held"
    assert check_send(DOC, "sms", False, facts).reason == "unreachable: no deliverable sms address"
    assert check_send(DOC, "email", False, facts).outcome == "send"
    night = Facts(now=at("2026-11-20T22:00:00+00:00"), profile=PROFILE, tz=zone("UTC"))
    verdict = check_send(DOC, "email", False, night)
    assert (verdict.outcome, verdict.until) == ("deferred", at("2026-11-21T09:00:00+00:00"))
    assert verdict.reason and verdict.reason.startswith("quiet_hours")
    capped = Facts(now=now, profile=PROFILE, tz=zone("UTC"), recent_sends=[
        ("email", now - timedelta(hours=20)), ("email", now - timedelta(hours=2)),
        ("sms", now)])
    verdict = check_send(DOC, "email", False, capped)
    assert verdict.outcome == "deferred" and verdict.until == now + timedelta(hours=4)
    assert verdict.reason and verdict.reason.startswith("frequency_cap email")


def test_reachable_needs_an_address_not_marked_undeliverable() -> None:
    assert not reachable({"email": "a@example.com", "reachable": {"email": False}}, "email")
    assert reachable({"push_tokens": ["t"]}, "push") and not reachable({}, "push")
    assert reachable({}, "webhook")


def test_iso_durations_read_like_the_document() -> None:
    assert [iso_duration(timedelta(**kw)) for kw in (
        {"days": 7}, {"hours": 2, "minutes": 30}, {"seconds": 1.5}, {"days": 1, "seconds": 5},
        {})] == ["P7D", "PT2H30M", "PT1.5S", "P1DT5S", "PT0S"]


def test_uplift_has_a_confidence_interval() -> None:
    result = uplift((300, 1000), (20, 100))
    assert result["uplift"] == 0.1
    low, high = result["ci95"]
    assert low < 0.1 < high and high - low < 0.2
    assert uplift((3, 10), (0, 0)) == {"uplift": None, "ci95": None, "ci_method": "newcombe",
                                       "holdout_size": 0}
