"""Every playbook, path by path, on virtual time: which templates go out, and when.

The journey's own simulator decides (the engine's rule functions); profiles are the
snapshots profile would send. Playbooks with a holdout run with `holdout` 0 here so the
paths are deterministic; holdout itself is covered by the engine's tests.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

from services.journey.domain.document import JourneyDocument
from services.journey.domain.simulate import SimEvent, simulate
from touchpoint.playbooks import load

START = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)  # a Friday, 11:00 in Paris
H, D = 3600, 86_400
PROFILE = {"profile_id": "p1", "user_id": "u1", "email": "ada@example.com",
           "timezone": "Europe/Paris", "traits": {"first_name": "Ada"},
           "metrics": {"order_count": 1}}

Ev = tuple[float, str, dict[str, Any]]


def run(name: str, *events: Ev, profile: dict[str, Any] | None = None, days: int = 60,
        **knobs: Any) -> dict[str, Any]:
    doc = JourneyDocument.model_validate(load(name).configured(values=knobs))
    timeline = []
    for n, (at, what, props) in enumerate(events):
        when = START + timedelta(seconds=at)
        if what.startswith("change:"):
            timeline.append(SimEvent(f"e{n}", when, change=what[7:], data=props))
        else:
            timeline.append(SimEvent(f"e{n}", when, what, props))
    return simulate(doc, PROFILE | (profile or {}), timeline, start=START,
                    horizon=timedelta(days=days))


def sent(result: dict[str, Any]) -> list[str]:
    return [s["template"] for s in result["sends"]]


def keyed(result: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s["instance_key"], s["template"]) for s in result["sends"]]


def offsets(result: dict[str, Any]) -> list[float]:
    return [(s["at"] - START).total_seconds() for s in result["sends"]]


def states(result: dict[str, Any]) -> list[tuple[str, str]]:
    return [(i["stage"], i["status"]) for i in result["instances"]]


# -- welcome -----------------------------------------------------------------------------

def test_welcome_without_an_order_sends_the_whole_series() -> None:
    result = run("welcome", (0, "Signed Up", {}))
    assert sent(result) == ["welcome-1", "welcome-2", "welcome-3"]
    assert offsets(result) == [0, 2 * D, 5 * D]


def test_welcome_stops_at_the_first_order_which_is_the_goal() -> None:
    result = run("welcome", (0, "Signed Up", {}), (D, "Order Completed", {"order_id": "o1"}))
    assert sent(result) == ["welcome-1"]
    assert states(result) == [("first-order", "completed")]
    assert result["instances"][0]["goal_at"] == START + timedelta(days=1)


def test_welcome_runs_once_per_customer() -> None:
    result = run("welcome", (0, "Signed Up", {}), (10 * D, "Signed Up", {}))
    assert sent(result) == ["welcome-1", "welcome-2", "welcome-3"]
    assert any(t["outcome"] == "blocked" for t in result["trace"])


def test_welcome_waits_out_quiet_hours() -> None:
    result = run("welcome", (11 * H, "Signed Up", {}))  # 22:00 in Paris
    assert offsets(result)[0] == 21 * H  # 08:00 in Paris the next morning


# -- abandoned-cart ----------------------------------------------------------------------

def test_abandoned_carts_are_reminded_per_cart_twice() -> None:
    result = run("abandoned-cart", (0, "Product Added", {"cart_id": "a"}),
                 (60, "Product Added", {"cart_id": "a"}), (0, "Product Added", {"cart_id": "b"}))
    assert sorted(keyed(result)) == [("a", "abandoned-cart-1"), ("a", "abandoned-cart-2"),
                                     ("b", "abandoned-cart-1"), ("b", "abandoned-cart-2")]
    assert sorted(set(offsets(result))) == [H, H + D]


def test_checking_out_one_cart_stops_only_its_reminders() -> None:
    result = run("abandoned-cart", (0, "Product Added", {"cart_id": "a"}),
                 (0, "Product Added", {"cart_id": "b"}),
                 (2 * H, "Order Completed", {"cart_id": "a", "order_id": "o1"}))
    assert sorted(keyed(result)) == [("a", "abandoned-cart-1"), ("b", "abandoned-cart-1"),
                                     ("b", "abandoned-cart-2")]


def test_an_order_without_a_cart_id_ends_every_cart_and_a_quick_checkout_sends_nothing() -> None:
    result = run("abandoned-cart", (0, "Product Added", {"cart_id": "a"}),
                 (0, "Product Added", {"cart_id": "b"}), (600, "Order Completed", {}))
    assert sent(result) == []
    assert [i["status"] for i in result["instances"]] == ["exited", "exited"]


def test_a_cart_event_without_cart_id_is_refused_with_the_reason() -> None:
    result = run("abandoned-cart", (0, "Product Added", {"product_id": "x"}))
    assert sent(result) == [] and result["instances"] == []
    assert "instance_key" in next(t["reason"] for t in result["trace"])


# -- abandoned-browse --------------------------------------------------------------------

def test_a_viewed_product_gets_one_nudge() -> None:
    result = run("abandoned-browse", (0, "Product Viewed", {"product_id": "p1", "name": "Mug"}))
    assert keyed(result) == [("p1", "abandoned-browse-1")] and offsets(result) == [2 * H]


def test_carting_the_product_or_ordering_ends_the_browse_run() -> None:
    carted = run("abandoned-browse", (0, "Product Viewed", {"product_id": "p1"}),
                 (0, "Product Viewed", {"product_id": "p2"}),
                 (H, "Product Added", {"product_id": "p1", "cart_id": "c"}))
    assert keyed(carted) == [("p2", "abandoned-browse-1")]
    ordered = run("abandoned-browse", (0, "Product Viewed", {"product_id": "p1"}),
                  (0, "Product Viewed", {"product_id": "p2"}), (H, "Order Completed", {}))
    assert sent(ordered) == []


def test_the_same_product_is_nudged_once_per_cooldown() -> None:
    result = run("abandoned-browse", (0, "Product Viewed", {"product_id": "p1"}),
                 (D, "Product Viewed", {"product_id": "p1"}),
                 (20 * D, "Product Viewed", {"product_id": "p1"}))
    assert sent(result) == ["abandoned-browse-1", "abandoned-browse-1"]
    assert offsets(result) == [2 * H, 20 * D + 2 * H]


# -- review-request ----------------------------------------------------------------------

def test_no_review_gets_the_ask_and_one_nudge() -> None:
    result = run("review-request", (0, "Order Completed", {"order_id": "o1"}))
    assert sent(result) == ["review-request-ask", "review-request-nudge"]
    assert offsets(result) == [7 * D, 14 * D]


def test_a_review_after_the_ask_is_thanked_with_the_code_template() -> None:
    result = run("review-request", (0, "Order Completed", {"order_id": "o1"}),
                 (8 * D, "Review Submitted", {"order_id": "o1"}))
    assert sent(result) == ["review-request-ask", "review-request-thanks"]
    assert states(result) == [("reviewed", "completed")]
    assert result["instances"][0]["goal_at"] is not None


def test_a_review_before_the_ask_skips_it_and_orders_are_separate() -> None:
    result = run("review-request", (0, "Order Completed", {"order_id": "o1"}),
                 (0, "Order Completed", {"order_id": "o2"}),
                 (D, "Review Submitted", {"order_id": "o1"}))
    assert sorted(keyed(result)) == [("o1", "review-request-thanks"),
                                     ("o2", "review-request-ask"), ("o2", "review-request-nudge")]


def test_a_refund_ends_the_review_run() -> None:
    result = run("review-request", (0, "Order Completed", {"order_id": "o1"}),
                 (2 * D, "Order Refunded", {"order_id": "o1"}))
    assert sent(result) == [] and states(result) == [("ordered", "exited")]


# -- second-purchase ---------------------------------------------------------------------

def test_a_first_time_buyer_without_a_second_order_gets_ideas_then_the_offer() -> None:
    result = run("second-purchase", (0, "Order Completed", {"order_id": "o1"}), holdout=0)
    assert sent(result) == ["second-purchase-ideas", "second-purchase-offer"]
    assert offsets(result) == [3 * D, 17 * D]


def test_the_second_order_ends_it_as_the_goal() -> None:
    result = run("second-purchase", (0, "Order Completed", {"order_id": "o1"}),
                 (5 * D, "Order Completed", {"order_id": "o2"}), holdout=0)
    assert sent(result) == ["second-purchase-ideas"]
    assert states(result) == [("second-order", "completed")]


def test_repeat_customers_do_not_enter() -> None:
    result = run("second-purchase", (0, "Order Completed", {"order_id": "o9"}),
                 profile={"metrics": {"order_count": 4}}, holdout=0)
    assert sent(result) == [] and result["instances"] == []
    assert next(t for t in result["trace"])["outcome"] == "not_entered"


def test_second_purchase_holds_out_a_control_group() -> None:
    held = [pid for pid in (f"p{n}" for n in range(200))
            if run("second-purchase", (0, "Order Completed", {}),
                   profile={"profile_id": pid})["instances"][0]["holdout"]]
    assert 5 <= len(held) <= 40  # about 10 %
    result = run("second-purchase", (0, "Order Completed", {}), profile={"profile_id": held[0]})
    assert sent(result) == []
    assert {t["outcome"] for t in result["trace"] if t["kind"] == "send"} == {"held"}


# -- replenishment -----------------------------------------------------------------------

def due_in(days: float) -> dict[str, Any]:
    return {"metrics": {"order_count": 2,
                        "next_order_expected_at": (START + timedelta(days=days)).isoformat()}}


def test_replenishment_reminds_three_days_before_the_customers_next_order() -> None:
    result = run("replenishment", (0, "Order Completed", {}), profile=due_in(20))
    assert sent(result) == ["replenishment-reminder", "replenishment-nudge"]
    assert offsets(result) == [17 * D, 22 * D]


def test_replenishment_without_an_expected_date_sends_nothing_and_says_why() -> None:
    result = run("replenishment", (0, "Order Completed", {}))
    assert sent(result) == [] and states(result) == [("ordered", "completed")]
    skipped = next(t for t in result["trace"] if t["kind"] == "wait")
    assert skipped["reason"] == "profile.metrics.next_order_expected_at: missing"


def test_a_new_order_restarts_the_replenishment_clock() -> None:
    result = run("replenishment", (0, "Order Completed", {}), (10 * D, "Order Completed", {}),
                 profile=due_in(20), days=19)
    assert sent(result) == ["replenishment-reminder"]
    assert [i["exit_reason"] for i in result["instances"]][0].startswith("re-entered")
    assert offsets(result) == [17 * D]


def test_an_overdue_customer_is_reminded_at_once() -> None:
    result = run("replenishment", (0, "Order Completed", {}), profile=due_in(1), days=3)
    assert sent(result) == ["replenishment-reminder"] and offsets(result) == [0]


# -- win-back ----------------------------------------------------------------------------

LIFECYCLE = "change:lifecycle_changed"


def test_at_risk_customers_get_an_offer_or_a_check_in_by_churn_risk() -> None:
    for risk, template in ((0.8, "win-back-offer"), (0.3, "win-back-check-in"),
                           (None, "win-back-check-in")):
        result = run("win-back", (0, LIFECYCLE, {"from": "active", "to": "at_risk"}),
                     profile={"metrics": {"order_count": 3, "churn_risk": risk}}, holdout=0)
        assert sent(result) == [template], risk
        assert states(result) == [("at-risk", "active")]  # idles until lapsed or an order


def test_lapsed_customers_get_the_exit_survey_and_a_thank_you_when_they_answer() -> None:
    result = run("win-back", (0, LIFECYCLE, {"from": "at_risk", "to": "lapsed"}),
                 (2 * D, "Survey Responded", {"reason": "too expensive"}), holdout=0)
    assert sent(result) == ["win-back-survey", "win-back-survey-thanks"]
    assert offsets(result) == [0, 2 * D]


def test_no_survey_answer_gets_the_last_chance_email() -> None:
    result = run("win-back", (0, LIFECYCLE, {"from": "at_risk", "to": "lapsed"}), holdout=0)
    assert sent(result) == ["win-back-survey", "win-back-last-chance"]
    assert offsets(result) == [0, 14 * D]


def test_at_risk_then_lapsed_then_won_back() -> None:
    result = run("win-back", (0, LIFECYCLE, {"from": "active", "to": "at_risk"}),
                 (30 * D, LIFECYCLE, {"from": "at_risk", "to": "lapsed"}),
                 (31 * D, "Order Completed", {"order_id": "o1"}),
                 profile={"metrics": {"order_count": 3, "churn_risk": 0.9}}, holdout=0)
    assert sent(result) == ["win-back-offer", "win-back-survey"]
    assert states(result) == [("won-back", "completed")]
    assert result["instances"][0]["goal_at"] == START + timedelta(days=31)


def test_other_lifecycle_changes_do_not_enter() -> None:
    result = run("win-back", (0, LIFECYCLE, {"from": None, "to": "new"}), holdout=0)
    assert result["instances"] == []


# -- nps ---------------------------------------------------------------------------------

def test_nps_detractors_promoters_and_passives() -> None:
    for score, template in ((0, "nps-detractor"), (6, "nps-detractor"), (7, "nps-passive"),
                            (8, "nps-passive"), (9, "nps-promoter"), (10, "nps-promoter")):
        result = run("nps", (0, "NPS Survey Submitted", {"score": score}))
        assert sent(result) == [template], score
        flagged = [t for t in result["trace"] if t["kind"] == "update_profile"]
        assert bool(flagged) is (score <= 6)


def test_nps_without_a_score_gets_the_passive_thank_you() -> None:
    assert sent(run("nps", (0, "NPS Survey Submitted", {}))) == ["nps-passive"]


def test_one_nps_follow_up_per_cooldown() -> None:
    result = run("nps", (0, "NPS Survey Submitted", {"score": 3}),
                 (D, "NPS Survey Submitted", {"score": 10}),
                 (40 * D, "NPS Survey Submitted", {"score": 10}))
    assert sent(result) == ["nps-detractor", "nps-promoter"]


# -- birthday ----------------------------------------------------------------------------

BIRTHDAY_SET = "change:traits_changed"


def test_birthday_wish_on_the_day_in_the_customers_zone_every_year() -> None:
    result = run("birthday", (0, BIRTHDAY_SET, {"traits": ["birthday"]}),
                 profile={"traits": {"birthday": "1990-11-21"}}, days=370)
    assert sent(result) == ["birthday-wish", "birthday-wish"]
    assert [s["at"] for s in result["sends"]] == [
        datetime(2026, 11, 21, 8, 0, tzinfo=UTC), datetime(2027, 11, 21, 8, 0, tzinfo=UTC)]


def test_a_leap_day_birthday_is_wished_on_feb_28() -> None:
    result = run("birthday", (0, BIRTHDAY_SET, {"traits": ["birthday"]}),
                 profile={"traits": {"birthday": "2000-02-29"}, "timezone": "Asia/Tokyo"},
                 days=120)
    assert [s["at"] for s in result["sends"]] == [datetime(2027, 2, 28, 0, 0, tzinfo=UTC)]


def test_no_birthday_no_entry() -> None:
    result = run("birthday", (0, BIRTHDAY_SET, {"traits": ["first_name"]}), days=5)
    assert result["instances"] == [] and sent(result) == []
