"""Identity rules, traits, merges, delivery outcomes and segment rules (pure, no sockets)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.profile.domain.conventions import Conventions, order_value
from services.profile.domain.delivery import apply_delivery, event_name
from services.profile.domain.identity import (
    _NAMESPACE,
    Candidate,
    identifiers,
    new_profile_id,
    normalise_phone,
    resolve,
)
from services.profile.domain.orders import OrderBook, order_key
from services.profile.domain.segments import is_time_based, matches, rule_adapter
from services.profile.domain.snapshot import snapshot
from services.profile.domain.state import ProfileState, apply_event, merge_into, reachable
from shared.contracts.delivery import DeliveryEvent
from shared.contracts.events import Event

T0 = datetime(2026, 11, 1, tzinfo=UTC)
CONV = Conventions()


def ev(**kw: object) -> Event:
    base: dict[str, object] = {"id": "e", "workspace_id": "w", "timestamp": T0,
                               "received_at": T0}
    return Event.model_validate({**base, **kw})


def test_identifiers_are_normalised_strongest_first() -> None:
    e = ev(type="identify", user_id="u", anonymous_id="a",
           traits={"email": " A@B.io ", "phone": "+44 20 7946 0958"})
    assert identifiers(e) == [("user_id", "u"), ("email", "a@b.io"), ("phone", "+442079460958"),
                              ("anonymous_id", "a")]
    assert normalise_phone("020 7946 0958", "GB") == "+442079460958"
    assert normalise_phone("12") is None and normalise_phone("not a phone") is None


def cand(pid: str, user: str | None, first: str) -> Candidate:
    return Candidate(pid, user, first)


def test_new_profile_ids_are_uuid5() -> None:
    """Replays must keep creating the same ids: the fast path is uuid.uuid5 exactly."""
    for ws, first in [("ws", ("anonymous_id", "a-1")), ("wé", ("email", "zöe@x.io")),
                      ("", ("user_id", "")), ("ws", ("user_id", "u" * 320))]:
        name = f"{ws}\x00{first[0]}\x00{first[1]}"
        assert new_profile_id(ws, first) == str(uuid.uuid5(_NAMESPACE, name))


def test_resolution_rules() -> None:
    owners = {("anonymous_id", "a"): "P1", ("anonymous_id", "b"): "P2",
              ("user_id", "u"): "P2", ("email", "f@x"): "P3"}
    profiles = {"P1": cand("P1", None, "2026-01-01"), "P2": cand("P2", "u", "2026-02-01"),
                "P3": cand("P3", "other", "2026-01-01")}
    r = resolve("w", [("user_id", "u"), ("anonymous_id", "a")], owners, profiles)
    assert (r.profile_id, r.merged, r.claimed) == ("P2", ["P1"], [])  # the user id's profile wins
    r = resolve("w", [("user_id", "u"), ("email", "f@x")], owners, profiles)
    assert (r.profile_id, r.merged) == ("P2", [])  # never fuse two accounts over an email
    r = resolve("w", [("user_id", "new"), ("email", "f@x")], owners, profiles)
    assert r.created and r.claimed == [("user_id", "new")]  # the email stays with its owner
    r = resolve("w", [("user_id", "u"), ("anonymous_id", "x")], owners, profiles,
                lookup=[("user_id", "other")], explicit=True)
    assert r.merged == [] and r.profile_id == "P2"


def test_survivor_does_not_depend_on_arrival_order() -> None:
    profiles = {"P1": cand("P1", None, "2026-03-01"), "P2": cand("P2", None, "2026-01-01")}
    owners = {("anonymous_id", "a"): "P1", ("anonymous_id", "b"): "P2"}
    one = resolve("w", [("email", "e"), ("anonymous_id", "a"), ("anonymous_id", "b")], owners,
                  profiles)
    two = resolve("w", [("email", "e"), ("anonymous_id", "b"), ("anonymous_id", "a")], owners,
                  profiles)
    assert one.profile_id == two.profile_id == "P2"  # the earliest seen


def state(pid: str = "p") -> ProfileState:
    return ProfileState(pid, "w", T0, T0)


def test_a_late_older_identify_does_not_overwrite_a_trait() -> None:
    p = state()
    apply_event(p, ev(type="identify", user_id="u", traits={"plan": "pro"},
                      timestamp=T0 + timedelta(days=2)), CONV)
    apply_event(p, ev(type="identify", user_id="u", traits={"plan": "free", "age": 3},
                      timestamp=T0 + timedelta(days=1)), CONV)
    assert p.traits == {"plan": "pro", "age": 3}
    assert p.trait_seen["plan"][0] < p.trait_seen["plan"][1]


def test_orders_refunds_and_nps() -> None:
    p = state()
    for day, props in ((0, {"revenue": 40}), (10, {"total": "60"}), (20, {"revenue": "x"})):
        apply_event(p, ev(type="track", user_id="u", event="Order Completed", properties=props,
                          timestamp=T0 + timedelta(days=day)), CONV)
    apply_event(p, ev(type="track", user_id="u", event="Order Refunded",
                      properties={"total": 10}, timestamp=T0), CONV)
    apply_event(p, ev(type="track", user_id="u", event="NPS Survey Submitted",
                      properties={"score": 6}, timestamp=T0), CONV)
    m = snapshot(p, [], T0 + timedelta(days=25), CONV).metrics
    assert (m["order_count"], m["gross_revenue"], m["revenue"]) == (3, 100, 90)
    assert m["average_order_value"] == 30 and m["mean_interpurchase_days"] == 10
    assert m["days_since_last_order"] == 5 and m["nps_category"] == "detractor"
    assert order_value({"revenue": True, "total": 5}, CONV) == 5


def test_merge_adds_histories_and_keeps_newer_values() -> None:
    a, b = state("a"), state("b")
    apply_event(a, ev(type="identify", user_id="u", traits={"plan": "free"}), CONV)
    apply_event(b, ev(type="identify", anonymous_id="x", traits={"plan": "pro", "city": "Oslo"},
                      timestamp=T0 + timedelta(hours=1)), CONV)
    apply_event(b, ev(type="track", anonymous_id="x", event="Order Completed",
                      properties={"revenue": 9}), CONV)
    merge_into(a, b)
    assert a.traits == {"plan": "pro", "city": "Oslo"} and a.user_id == "u"
    assert (a.event_count, a.order_count, a.gross_revenue) == (3, 1, 9)


def delivery(status: str, channel: str = "email", reason: str | None = None) -> DeliveryEvent:
    return DeliveryEvent.model_validate({"id": "d", "workspace_id": "w", "profile_id": "p",
                                         "message_id": "m", "status": status, "channel": channel,
                                         "reason": reason, "occurred_at": T0})


def test_delivery_outcomes() -> None:
    p = state()
    apply_event(p, ev(type="identify", user_id="u", traits={"email": "a@b.io"},
                      context={"device": {"token": "tok-12345678"}}), CONV)
    assert reachable(p) == {"email": True, "sms": False, "push": True}
    assert apply_delivery(p, delivery("bounced", reason="soft bounce: mailbox full")) == []
    [change] = apply_delivery(p, delivery("bounced", reason="550 no such user"))
    assert change.data == {"channel": "email", "deliverable": False, "reason": "550 no such user"}
    apply_delivery(p, delivery("failed", channel="push", reason="invalid push token"))
    assert reachable(p) == {"email": False, "sms": False, "push": False}
    [change] = apply_delivery(p, delivery("unsubscribed"))
    assert change.kind == "consent_changed" and p.consent["email"]["subscribed"] is False
    apply_delivery(p, delivery("clicked"))
    assert p.last_click_at == T0 and p.last_open_at == T0


def test_sent_codes_are_kept_per_pool_and_test_sends_are_not() -> None:
    p = state()
    sent = delivery("sent").model_copy(update={"codes": {"thanks-20": "TH-1"}})
    assert apply_delivery(p, sent) == [] and p.codes == {"thanks-20": "TH-1"}
    apply_delivery(p, delivery("sent").model_copy(update={"codes": {"nps": "N-9"}}))
    apply_delivery(p, delivery("sent").model_copy(update={"codes": {"nps": "T"}, "test": True}))
    assert p.codes == {"thanks-20": "TH-1", "nps": "N-9"}
    assert snapshot(p, [], T0, CONV).codes == {"thanks-20": "TH-1", "nps": "N-9"}
    assert snapshot(state(), [], T0, CONV).codes is None
    assert event_name(delivery("clicked")) == "Email Link Clicked"
    assert event_name(delivery("opened", channel="push")) == "Push Notification Opened"
    assert event_name(delivery("unsubscribed")) == "Unsubscribed"


def test_segment_rules() -> None:
    rule = rule_adapter.validate_python({"all": [
        {"field": "profile.traits.plan", "op": "eq", "value": "pro"},
        {"performed": {"event": "Order Completed", "op": "gte", "count": 2, "within": "P90D"}}]})
    [agg] = [rule.all[1].performed]  # type: ignore[union-attr]
    view = {"traits": {"plan": "pro"}, "metrics": {}}
    assert matches(rule, view, {agg.key(): 2}, T0)
    assert not matches(rule, view, {agg.key(): 1}, T0)
    assert is_time_based(rule)
    assert not is_time_based(rule_adapter.validate_python(
        {"field": "profile.traits.plan", "op": "eq", "value": "pro"}))
    with pytest.raises(ValidationError):
        rule_adapter.validate_python({"field": "event.name", "op": "eq", "value": 1})
    with pytest.raises(ValidationError):
        rule_adapter.validate_python({"field": "profile.x", "op": "matches"})


def test_an_outcome_naming_its_address_marks_only_that_address() -> None:
    p = state()
    apply_event(p, ev(type="identify", user_id="u", traits={"email": "new@b.io"},
                      context={"device": {"token": "token-aaaaaaaa"}}), CONV)
    apply_event(p, ev(type="track", user_id="u", event="X",
                      context={"device": {"token": "token-bbbbbbbb"}}), CONV)
    old_bounce = delivery("bounced", reason="550 unknown").model_copy(
        update={"address": "OLD@b.io"})
    assert apply_delivery(p, old_bounce) == [] and reachable(p)["email"]
    bad = delivery("failed", channel="push", reason="invalid push token").model_copy(
        update={"address": "token-aaaaaaaa"})
    apply_delivery(p, bad)
    assert [t for t, v in p.push_tokens.items() if v["deliverable"]] == ["token-bbbbbbbb"]
    unknown = bad.model_copy(update={"address": "token-zzzzzzzz"})
    assert apply_delivery(p, unknown) == [] and reachable(p)["push"]


def test_order_keys_are_the_kpi_orders_keys() -> None:
    assert order_key({"order_id": 17}, "m1") == "17"
    assert order_key({"order_id": ""}, "m1") == order_key({}, "m1") == "event:m1"
    assert order_key({"order_id": "x" * 300}, "m1") == "x" * 200
    book = OrderBook(known={("ws", "a")})
    assert [book.first("ws", k) for k in ("a", "b", "b")] == [False, True, False]
    assert book.first("other", "a") and book.counted == {("ws", "b"), ("other", "a")}
