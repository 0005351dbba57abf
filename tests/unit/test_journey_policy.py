"""The contact policy and broadcast rules, on virtual time (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from services.journey.domain.broadcast import (
    BroadcastDocument,
    advanced,
    allowed,
    classify,
    reason_of,
)
from services.journey.domain.policy import (
    ContactPolicy,
    PastSend,
    TemplateMeta,
    check,
    in_control,
    local_due,
)

NOW = datetime(2026, 3, 10, 19, 0, tzinfo=UTC)  # 20:00 in Paris
PARIS = ZoneInfo("Europe/Paris")
PROFILE = {"profile_id": "p", "email": "p@example.com", "segments": ["vip"]}
NEWS = TemplateMeta("email", "marketing", "news")


def policy(**fields: object) -> ContactPolicy:
    return ContactPolicy.model_validate(fields)


def sent(hours_ago: float, topic: str | None = None, category: str = "marketing") -> PastSend:
    return PastSend("email", topic, category, NOW - timedelta(hours=hours_ago))


def test_a_calendar_day_cap_defers_to_the_next_local_midnight() -> None:
    p = policy(caps=[{"channel": "email", "max": 2, "per": "calendar_day"}])
    verdict = check(p, "email", NEWS, PROFILE, [sent(1), sent(2)], NOW, PARIS, control=False)
    assert verdict.outcome == "deferred" and verdict.rule == "caps.0"
    assert (verdict.window, verdict.count) == ("calendar_day", 2)
    assert verdict.until == datetime(2026, 3, 10, 23, 0, tzinfo=UTC)  # 00:00 in Paris
    # Yesterday's local sends do not count (21 h ago was yesterday in Paris).
    assert check(p, "email", NEWS, PROFILE, [sent(21), sent(1)], NOW, PARIS,
                 control=False).sends


def test_a_rolling_cap_frees_when_the_oldest_send_leaves_the_window() -> None:
    p = policy(caps=[{"channel": "email", "max": 2, "per": "P1D"}])
    verdict = check(p, "email", NEWS, PROFILE, [sent(20), sent(3)], NOW, PARIS, control=False)
    assert verdict.until == NOW + timedelta(hours=4)
    assert check(p, "email", NEWS, PROFILE, [sent(25), sent(3)], NOW, PARIS,
                 control=False).sends


def test_topic_caps_count_that_topic_and_transactional_sends_are_neither_capped_nor_counted(
        ) -> None:
    p = policy(caps=[{"channel": "email", "topic": "news", "max": 1, "per": "P1D"}])
    other = TemplateMeta("email", "marketing", "offers")
    assert check(p, "email", other, PROFILE, [sent(1, "news")], NOW, PARIS,
                 control=False).sends
    assert not check(p, "email", NEWS, PROFILE, [sent(1, "news")], NOW, PARIS,
                     control=False).sends
    assert check(p, "email", NEWS, PROFILE, [sent(1, "news", "transactional")], NOW, PARIS,
                 control=False).sends
    receipt = TemplateMeta("email", "transactional", "news")
    quiet = policy(quiet_hours={"start": "19:00", "end": "08:00"}, caps=p.caps)
    assert check(quiet, "email", receipt, PROFILE, [sent(1, "news")], NOW, PARIS,
                 control=True).sends


def test_held_sends_expire_and_skip_when_not_deferred() -> None:
    p = policy(quiet_hours={"start": "19:00", "end": "08:00"},
               on_hold={"defer": True, "expire_after": "PT6H"})
    first = check(p, "email", NEWS, PROFILE, [], NOW, PARIS, control=False)
    assert first.outcome == "deferred" and first.rule == "quiet_hours"
    assert first.until == NOW + timedelta(hours=6)  # expiry comes before 08:00
    later = check(p, "email", NEWS, PROFILE, [], NOW + timedelta(hours=6), PARIS,
                  control=False, held_since=NOW)
    assert later.outcome == "expired" and later.rule == "on_hold.expire_after"
    skip = policy(quiet_hours={"start": "19:00", "end": "08:00"}, on_hold={"defer": False})
    assert check(skip, "email", NEWS, PROFILE, [], NOW, PARIS, control=False).outcome == "held"


def test_priority_orders_who_retries_first_for_a_freed_slot() -> None:
    p = policy(caps=[{"channel": "email", "max": 1, "per": "calendar_day"}],
               priority=["cart", "broadcast:sale"])
    held = [check(p, "email", NEWS, PROFILE, [sent(1)], NOW, PARIS, control=False,
                  sender=sender) for sender in ("other", "broadcast:sale", "cart")]
    midnight = datetime(2026, 3, 10, 23, 0, tzinfo=UTC)
    assert [h.until for h in held] == [midnight + timedelta(seconds=s) for s in (2, 1, 0)]


def test_control_group_is_stable_and_about_the_percent() -> None:
    members = [in_control("salt", f"p{n}", 10) for n in range(5000)]
    assert 400 < sum(members) < 600
    assert members == [in_control("salt", f"p{n}", 10) for n in range(5000)]
    assert not any(in_control("salt", f"p{n}", 0) for n in range(100))
    verdict = check(ContactPolicy(), "email", NEWS, PROFILE, [], NOW, PARIS, control=True)
    assert (verdict.outcome, verdict.rule) == ("suppressed", "control_group")


@pytest.mark.parametrize(("body", "field"), [
    ({"caps": [{"channel": "email", "max": 1, "per": "P1D"},
               {"channel": "email", "max": 2, "per": "P1D"}]}, "caps.1"),
    ({"caps": [{"channel": "email", "max": 9, "per": "P1D"},
               {"channel": "email", "max": 3, "per": "P7D"}]}, "caps.0: can never be reached"),
    ({"caps": [{"channel": "email", "max": 1, "per": "PT0S"}]}, "caps.0.per"),
    ({"on_hold": {"defer": False, "expire_after": "P1D"}}, "on_hold"),
    ({"control_group_percent": 80}, "control_group_percent"),
])
def test_contradictory_policies_are_refused(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        ContactPolicy.model_validate(body)
    assert field in str(err.value)


def test_broadcast_documents_and_classification() -> None:
    with pytest.raises(ValidationError, match="exactly one of segment, condition"):
        BroadcastDocument.model_validate({"template": "news"})
    with pytest.raises(ValidationError):
        BroadcastDocument.model_validate({"segment": "vip", "template": "n",
                                          "throttle_per_second": 0})
    doc = BroadcastDocument.model_validate({"segment": "vip", "template": "news"})
    p = ContactPolicy()
    assert classify(doc, p, NEWS, PROFILE, [], NOW, PARIS, control=False).sends
    gone = classify(doc, p, NEWS, PROFILE | {"segments": []}, [], NOW, PARIS, control=False)
    assert reason_of(gone) == "left_audience"
    bounced = classify(doc, p, NEWS, PROFILE | {"reachable": {"email": False}}, [], NOW, PARIS,
                       control=False)
    assert reason_of(bounced) == "undeliverable"
    unsubscribed = classify(doc, p, NEWS, PROFILE | {"consent": {"topic:news": False}}, [],
                            NOW, PARIS, control=False)
    assert reason_of(unsubscribed) == "no_consent"
    by_condition = BroadcastDocument.model_validate({
        "condition": {"field": "profile.traits.plan", "op": "eq", "value": "pro"},
        "template": "news"})
    assert classify(by_condition, p, NEWS, PROFILE | {"traits": {"plan": "pro"}}, [], NOW,
                    PARIS, control=False).sends


def test_local_time_and_pacing() -> None:
    # 09:00 on the send date in Paris; the next day where that moment has passed.
    assert local_due(NOW, "21:00", PARIS, NOW) == datetime(2026, 3, 10, 20, 0, tzinfo=UTC)
    assert local_due(NOW, "09:00", PARIS, NOW) == datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
    assert allowed(None, NOW, 10) == 10
    assert allowed(NOW - timedelta(seconds=0.25), NOW, 10) == 2
    assert allowed(NOW - timedelta(hours=1), NOW, 10) == 10  # at most a second's worth
    assert advanced(NOW - timedelta(seconds=1), NOW, 10, 4) == NOW - timedelta(seconds=0.6)


def test_a_steps_on_hold_overrides_the_policys() -> None:
    from services.journey.domain.document import JourneyDocument
    from services.journey.domain.state import Effects, Facts, Instance
    from services.journey.domain.steps import run_flow

    p = policy(quiet_hours={"start": "19:00", "end": "08:00"},
               on_hold={"defer": True, "expire_after": "P1D"})

    def outcome(send: dict[str, object]) -> tuple[str, str | None]:
        doc = JourneyDocument.model_validate({
            "key": "j", "name": "J", "stages": [{"key": "s", "enter": {"event": "E"},
                                                 "steps": [{"id": "m", "send": send}]}]})
        inst = Instance(id="i", workspace_id="w", journey_key="j", version=1,
                        profile_id="p", instance_key="", entry_id="e", stage="s",
                        status="active", holdout=False, entered_at=NOW, stage_entered_at=NOW)
        fx = Effects()
        run_flow(doc, inst, Facts(now=NOW, profile=PROFILE, tz=PARIS, policy=p), fx, event={})
        [decision] = [d for d in fx.decisions if d.kind == "send"]
        return decision.outcome, inst.wake_kind

    base = {"channel": "email", "template": "news"}
    assert outcome(base) == ("deferred", "deferred")
    assert outcome(base | {"on_hold": {"defer": False}})[0] == "held"


def test_a_send_stamped_just_after_this_replicas_clock_still_counts() -> None:
    """Two replicas fire at once: one reads its clock, then waits on the customer's lock
    while the other (whose clock read came a moment later) sends and commits. The send it
    then reads is stamped after its own `now`, and must count: otherwise both send and the
    cap is passed."""
    other = PastSend("email", None, "marketing", NOW + timedelta(milliseconds=3))
    for per in ("P1D", "calendar_day"):
        p = policy(caps=[{"channel": "email", "max": 1, "per": per}])
        verdict = check(p, "email", NEWS, PROFILE, [other], NOW, PARIS, control=False)
        assert verdict.outcome == "deferred" and verdict.count == 1, per
