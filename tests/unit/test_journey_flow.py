"""The engine's decisions on virtual time (the same functions the service runs)."""

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services.journey.domain.document import JourneyDocument
from services.journey.domain.policy import ContactPolicy, TemplateMeta
from services.journey.domain.simulate import SimEvent, Workspace, simulate

EXAMPLE = json.loads((Path(__file__).parents[2] / "services/journey/examples/"
                      "post-purchase-review.json").read_text())
START = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)  # 11:00 in Paris
PROFILE = {"profile_id": "p1", "user_id": "u1", "email": "a@example.com", "phone": "+336",
           "timezone": "Europe/Paris", "traits": {"plan": "pro"}}


def run(doc: dict[str, Any], *events: tuple[float, str, dict[str, Any]],
        profile: dict[str, Any] | None = None, days: int = 30) -> dict[str, Any]:
    timeline = [SimEvent(f"e{n}", START + timedelta(seconds=s), name, props)
                for n, (s, name, props) in enumerate(events)]
    return simulate(JourneyDocument.model_validate(doc), profile or PROFILE, timeline,
                    start=START, horizon=timedelta(days=days))


def sent(result: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s["instance_key"], s["template"]) for s in result["sends"]]


def example(**changes: Any) -> dict[str, Any]:
    return copy.deepcopy(EXAMPLE) | {"holdout_percent": 0} | changes


def test_example_both_exits_of_wait_for() -> None:
    result = run(example(), (0, "Order Completed", {"order_id": "a", "total": 60}),
                 (0, "Order Completed", {"order_id": "b", "total": 60}),
                 (3600, "Review Submitted", {"order_id": "a"}))
    assert sent(result) == [("a", "review-request"), ("b", "review-request"),
                            ("a", "review-thanks"), ("b", "review-nudge")]
    nudge = result["sends"][-1]
    assert nudge["at"] == START + timedelta(seconds=2) + timedelta(days=5)
    states = {i["instance_key"]: (i["stage"], i["status"]) for i in result["instances"]}
    assert states == {"a": ("reviewed", "completed"), "b": ("purchased", "active")}


def test_refund_interrupts_the_wait_and_records_why() -> None:
    result = run(example(), (0, "Order Completed", {"order_id": "a", "total": 60}),
                 (1, "Order Refunded", {"order_id": "a"}))
    assert sent(result) == []
    [inst] = result["instances"]
    assert inst["status"] == "exited" and inst["waiting_until"] is None
    assert inst["exit_reason"] == "exit_when.0: event 'Order Refunded'"


def test_quiet_hours_defer_in_the_customers_zone_not_drop() -> None:
    late = START.replace(hour=20, minute=30)  # 21:30 in Paris
    result = simulate(JourneyDocument.model_validate(example()), PROFILE,
                      [SimEvent("e", late, "Order Completed", {"order_id": "a", "total": 60})],
                      start=late, horizon=timedelta(days=2))
    deferred = [t for t in result["trace"] if t["outcome"] == "deferred"]
    assert deferred and deferred[0]["reason"].startswith("quiet_hours 21:00-09:00 in "
                                                         "Europe/Paris")
    assert result["sends"][0]["at"] == datetime(2026, 11, 21, 8, 0, tzinfo=UTC)  # 09:00 Paris


def test_holdout_is_in_the_journey_but_receives_nothing() -> None:
    result = run(example(holdout_percent=100),
                 (0, "Order Completed", {"order_id": "a", "total": 60}),
                 (10, "Review Submitted", {"order_id": "a"}))
    assert sent(result) == []
    held = [t for t in result["trace"] if t["outcome"] == "held"]
    assert {t["step"] for t in held} == {"ask", "thanks"}
    [inst] = result["instances"]
    assert inst["holdout"] and inst["goal_at"] is not None and inst["stage"] == "reviewed"


SIMPLE = {"key": "w", "name": "W", "stages": [{"key": "s", "enter": {"event": "Go"}, "steps": [
    {"id": "hi", "send": {"channel": "email", "template": "hi"}}]}]}


def test_reentry_policies_and_cooldown() -> None:
    go = [(n * 3600, "Go", {}) for n in range(3)]
    assert len(run(SIMPLE | {"reentry": "once"}, *go)["sends"]) == 1
    assert len(run(SIMPLE | {"reentry": "after_exit"}, *go)["sends"]) == 3
    cooled = run(SIMPLE | {"reentry": "always", "reentry_cooldown": "PT90M"}, *go)
    assert len(cooled["sends"]) == 2  # 0 h and 2 h; the 1 h entry is inside the cooldown
    blocked = [t for t in cooled["trace"] if t["outcome"] == "blocked"]
    assert blocked[0]["reason"].startswith("reentry_cooldown")
    waiting = copy.deepcopy(SIMPLE)
    waiting["stages"][0]["steps"].insert(0, {"id": "w", "wait": "P1D"})
    result = run(waiting | {"reentry": "after_exit"}, *go)
    assert len(result["sends"]) == 1
    assert [t["reason"] for t in result["trace"] if t["outcome"] == "blocked"] == [
        "reentry=after_exit: the customer is still in this journey"] * 2
    always = run(waiting | {"reentry": "always"}, *go)
    assert [i["status"] for i in always["instances"]] == ["exited", "exited", "completed"]


def test_branch_split_update_profile_webhook_and_exit() -> None:
    doc = {"key": "b", "name": "B", "stages": [{"key": "s", "enter": {"event": "Go"}, "steps": [
        {"id": "pick", "branch": {"cases": [
            {"when": {"field": "profile.traits.plan", "op": "eq", "value": "free"},
             "next": "upsell"},
            {"when": {"field": "event.properties.total", "op": "gt", "value": 100},
             "next": "vip"}], "default": "ab"}},
        {"id": "upsell", "send": {"channel": "email", "template": "upsell"}, "next": "end"},
        {"id": "vip", "update_profile": {"vip": True}},
        {"id": "hook", "webhook": {"url": "https://crm.example.com/vip"}, "next": "end"},
        {"id": "ab", "split": [{"percent": 50, "next": "a"}, {"percent": 50, "next": "b"}]},
        {"id": "a", "send": {"channel": "email", "template": "a"}, "next": "stop"},
        {"id": "b", "send": {"channel": "email", "template": "b"}, "next": "stop"},
        {"id": "stop", "exit": True}]}]}
    vip = run(doc, (0, "Go", {"total": 150}))
    kinds = [(t["kind"], t["outcome"], t["step"]) for t in vip["trace"]]
    assert ("branch", "case", "pick") in kinds and ("update_profile", "requested", "vip") in kinds
    assert vip["sends"] == [vip["sends"][0]] and vip["sends"][0]["channel"] == "webhook"
    branch = next(t for t in vip["trace"] if t["kind"] == "branch")
    assert branch["detail"]["seen"] == {"event.properties.total": 150}
    small = run(doc, (0, "Go", {"total": 5}))
    assert len(small["sends"]) == 1 and small["sends"][0]["template"] in {"a", "b"}
    assert small["instances"][0]["exit_reason"] == "exit step 'stop'"
    again = run(doc, (0, "Go", {"total": 5}))
    assert again["sends"][0]["template"] == small["sends"][0]["template"]  # deterministic


def test_unreachable_channel_takes_the_fallback_or_is_skipped_with_a_reason() -> None:
    doc = copy.deepcopy(SIMPLE)
    doc["stages"][0]["steps"] = [
        {"id": "push", "send": {"channel": "push", "template": "p", "fallback": "mail"},
         "next": "end"},
        {"id": "mail", "send": {"channel": "email", "template": "m"}},
        {"id": "text", "send": {"channel": "sms", "template": "t"}}]
    result = run(doc, (0, "Go", {}), profile=PROFILE | {"phone": None})
    assert [s["template"] for s in result["sends"]] == ["m"]
    reasons = [t["reason"] for t in result["trace"] if t["outcome"] == "skipped"]
    assert reasons == ["unreachable: no deliverable push address",
                       "unreachable: no deliverable sms address"]


def test_frequency_cap_defers_until_the_window_frees() -> None:
    doc = copy.deepcopy(SIMPLE) | {"reentry": "always",
                                   "frequency_cap": {"email": {"max": 2, "per": "PT1H"}}}
    result = run(doc, (0, "Go", {}), (60, "Go", {}), (120, "Go", {}))
    times = [s["at"] for s in result["sends"]]
    assert times == [START, START + timedelta(seconds=60), START + timedelta(hours=1)]


def test_a_next_loop_without_a_wait_is_stopped() -> None:
    doc = copy.deepcopy(SIMPLE)
    doc["stages"][0]["steps"] = [
        {"id": "a", "branch": {"cases": [{"when": {"field": "event.x", "op": "exists"},
                                          "next": "a"}], "default": "a"}}]
    [inst] = run(doc, (0, "Go", {}))["instances"]
    assert inst["status"] == "exited" and inst["exit_reason"].startswith("step limit")


def test_goal_stage_and_idle_timeout() -> None:
    doc = {"key": "g", "name": "G", "idle_timeout": "P2D", "goal": {"stage": "bought"},
           "stages": [{"key": "browsing", "enter": {"event": "Viewed"}},
                      {"key": "bought", "enter": {"event": "Bought"}}]}
    converted = run(doc, (0, "Viewed", {}), (60, "Bought", {}))
    assert converted["instances"][0]["goal_at"] == START + timedelta(seconds=60)
    idle = run(doc, (0, "Viewed", {}))
    assert idle["instances"][0]["status"] == "completed"
    assert idle["trace"][-1]["reason"] == "idle in stage 'browsing' for P2D"


def test_the_workspace_policy_applies_to_a_simulation() -> None:
    """A cap of one email a day across the journey's sends defers the second to the next
    day and drops it when it expires first; the control group gets no marketing; quiet
    hours defer in the customer's zone, the workspace's for a profile without one."""
    doc = JourneyDocument.model_validate({
        "key": "two", "name": "Two", "stages": [{"key": "s", "enter": {"event": "Go"},
                                                 "steps": [
            {"id": "a", "send": {"channel": "email", "template": "promo"}},
            {"id": "b", "send": {"channel": "email", "template": "promo"}},
            {"id": "r", "send": {"channel": "email", "template": "receipt"}}]}]})
    templates = {"promo": TemplateMeta("email", "marketing"),
                 "receipt": TemplateMeta("email", "transactional")}
    policy = ContactPolicy.model_validate({
        "caps": [{"channel": "email", "max": 1, "per": "P1D"}],
        "on_hold": {"defer": True, "expire_after": "P2D"}})
    events = [SimEvent("e", START, "Go")]

    def go(ws: Workspace, profile: dict[str, Any] = PROFILE) -> dict[str, Any]:
        return simulate(doc, profile, events, start=START, horizon=timedelta(days=5),
                        workspace=ws)
    result = go(Workspace(policy, templates))
    assert [(s["step"], s["at"]) for s in result["sends"]] == [
        ("a", START), ("b", START + timedelta(days=1)), ("r", START + timedelta(days=1))]
    [held] = [t for t in result["trace"] if t["outcome"] == "deferred"]
    assert held["detail"]["rule"] == "caps.0" and held["detail"]["count"] == 1
    assert [s["step"] for s in go(Workspace())["sends"]] == ["a", "b", "r"]  # no policy
    short = policy.model_copy(update={"on_hold": policy.on_hold.model_copy(
        update={"expire_after": timedelta(hours=12)})})
    result = go(Workspace(short, templates))
    assert [s["step"] for s in result["sends"]] == ["a", "r"]
    assert [t["outcome"] for t in result["trace"] if t["kind"] == "send"] == [
        "sent", "deferred", "expired", "sent"]
    result = go(Workspace(policy, templates, control=True))
    assert [s["step"] for s in result["sends"]] == ["r"]  # transactional only
    assert {t["detail"]["rule"] for t in result["trace"] if t["outcome"] == "suppressed"} == {
        "control_group"}
    quiet = ContactPolicy.model_validate({"quiet_hours": {"start": "10:30", "end": "12:00"}})
    no_zone = {k: v for k, v in PROFILE.items() if k != "timezone"}
    # 10:00 UTC: quiet in Paris (11:00) and in a workspace zone of Berlin; not in UTC.
    assert go(Workspace(quiet, templates))["sends"][0]["at"] == START.replace(hour=11)
    assert go(Workspace(quiet, templates, zone="Europe/Berlin"), no_zone)["sends"][0][
        "at"] == START.replace(hour=11)
    assert go(Workspace(quiet, templates), no_zone)["sends"][0]["at"] == START
