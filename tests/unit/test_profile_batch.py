"""A batch applied in memory (services/profile/domain/batch.py): no Postgres, no broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.profile.domain.batch import Batch, apply_item, ids_of
from services.profile.domain.conventions import Conventions
from services.profile.domain.identity import lookup_only
from services.profile.domain.state import ProfileState
from shared.contracts.delivery import DeliveryEvent
from shared.contracts.events import Event

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
CONV = Conventions()


def _event(**fields: object) -> Event:
    return Event.model_validate({"workspace_id": "ws", "received_at": NOW,
                                 "timestamp": NOW - timedelta(minutes=1), **fields})


def _apply(b: Batch, item: Event | DeliveryEvent) -> None:
    lookup = lookup_only(item) if isinstance(item, Event) else []
    apply_item(b, item, ids_of(item, CONV), lookup)


def _batch(states: dict[str, ProfileState] | None = None,
           owners: dict[tuple[str, str], str] | None = None) -> Batch:
    return Batch(NOW, {"ws": CONV}, {"ws": dict(owners or {})}, dict(states or {}))


def test_a_new_visitor_becomes_a_profile_with_its_event_published() -> None:
    b = _batch()
    _apply(b, _event(id="e1", type="track", event="Page Viewed", anonymous_id="anon-1"))
    [(pid, state)] = b.states.items()
    assert state.event_count == 1 and b.touched == {pid: "ws"}
    assert {(r["kind"], r["value"]) for r in b.new_identities} == {
        ("anonymous_id", "anon-1"), ("profile_id", pid)}
    assert [h["event_id"] for h in b.history] == ["e1"]
    assert [(p.event_id, p.profile_id) for p in b.published] == [("e1", pid)]
    assert b.changes == []  # no `created` change: the profile event names the new profile


def test_an_identify_that_joins_two_profiles_merges_them_once() -> None:
    old = NOW - timedelta(days=3)
    known = ProfileState("p-user", "ws", old, old, user_id="u-1", event_count=4)
    visitor = ProfileState("p-anon", "ws", NOW - timedelta(days=1), NOW, event_count=2)
    b = _batch({"p-user": known, "p-anon": visitor},
               {("user_id", "u-1"): "p-user", ("anonymous_id", "anon-9"): "p-anon"})
    _apply(b, _event(id="e2", type="identify", user_id="u-1", anonymous_id="anon-9",
                     traits={"plan": "pro"}))
    assert b.merges == [("p-anon", "p-user")] and b.live("p-anon") == "p-user"
    assert set(b.states) == {"p-user"} and b.states["p-user"].event_count == 7
    kinds = [change.kind for _, _, _, change in b.changes]
    assert kinds[0] == "merged" and b.changes[0][3].data == {"merged_ids": ["p-anon"]}
    assert "traits_changed" in kinds
    # Later messages for the merged-away profile follow it to the survivor.
    _apply(b, _event(id="e3", type="track", event="Clicked", anonymous_id="anon-9"))
    assert [p.profile_id for p in b.published] == ["p-user", "p-user"]


def test_an_outcome_for_a_profile_that_no_longer_exists_is_dropped() -> None:
    b = _batch()
    _apply(b, DeliveryEvent.model_validate({
        "id": "m1:sent", "workspace_id": "ws", "profile_id": "gone", "message_id": "m1",
        "status": "sent", "channel": "email", "template": "t", "occurred_at": NOW}))
    assert not (b.states or b.history or b.published or b.changes)


def test_a_delivery_outcome_is_history_and_a_kpi_fact() -> None:
    p = ProfileState("p1", "ws", NOW - timedelta(days=1), NOW - timedelta(days=1),
                     email="a@example.com")
    b = _batch({"p1": p}, {("profile_id", "p1"): "p1"})
    _apply(b, DeliveryEvent.model_validate({
        "id": "m1:sent", "workspace_id": "ws", "profile_id": "p1", "message_id": "m1",
        "status": "sent", "channel": "email", "template": "welcome", "occurred_at": NOW}))
    assert [h["event_id"] for h in b.history] == ["delivery:m1:sent"]
    assert b.history[0]["name"] and p.event_count == 1 and p.last_seen_at == NOW
    assert [(d.pid, d.message_id) for d in b.kpi.deliveries] == [("p1", "m1")]


def test_an_order_moves_the_lifecycle_stage() -> None:
    b = _batch()
    _apply(b, _event(id="o1", type="track", event="Order Completed", user_id="u-7",
                     properties={"order_id": "A1", "revenue": 40, "currency": "eur"}))
    [state] = b.states.values()
    assert state.order_count == 1 and state.lifecycle_stage is not None
    assert [c.kind for _, _, _, c in b.changes] == ["lifecycle_changed"]
    assert [(o.key, o.revenue, o.currency) for o in b.kpi.orders] == [("A1", 40.0, "EUR")]


def _order(event_id: str, order_id: str | None, revenue: float, **who: str) -> Event:
    props: dict[str, object] = {"revenue": revenue}
    if order_id is not None:
        props["order_id"] = order_id
    return _event(id=event_id, type="track", event="Order Completed", properties=props,
                  **(who or {"user_id": "u-1"}))


def test_a_retried_order_counts_once_on_the_profile_and_in_the_kpi_facts() -> None:
    b = _batch()
    _apply(b, _order("e1", "o-1", 40))
    _apply(b, _order("e2", "o-1", 40))  # the storefront's retry: another messageId
    [p] = b.states.values()
    assert (p.order_count, p.gross_revenue, p.event_count) == (1, 40, 2)
    assert b.orders.counted == {("ws", "o-1")}
    assert [o.key for o in b.kpi.orders] == ["o-1", "o-1"]  # kpi_orders keeps the first


def test_an_order_stored_by_an_earlier_batch_does_not_count_again() -> None:
    p = ProfileState("p1", "ws", NOW - timedelta(days=9), NOW - timedelta(days=9),
                     user_id="u-1", order_count=1, gross_revenue=40,
                     first_order_at=NOW - timedelta(days=9), last_order_at=NOW - timedelta(days=9))
    b = _batch({"p1": p}, {("user_id", "u-1"): "p1"})
    b.orders.known.add(("ws", "o-1"))
    _apply(b, _order("e2", "o-1", 40))
    assert (p.order_count, p.gross_revenue, p.last_order_at) == (1, 40, NOW - timedelta(days=9))
    assert b.orders.counted == set() and p.event_count == 1


def test_orders_without_an_order_id_count_each_event_and_refunds_count_each_time() -> None:
    b = _batch()
    for event_id in ("e1", "e2"):
        _apply(b, _order(event_id, None, 10))
    for event_id in ("r1", "r2"):
        _apply(b, _event(id=event_id, type="track", event="Order Refunded", user_id="u-1",
                         properties={"order_id": "o-9", "revenue": 5}))
    [p] = b.states.values()
    assert (p.order_count, p.gross_revenue) == (2, 20)
    assert (p.refund_count, p.refunded) == (2, 10)  # refunds: as before, each event
    assert b.orders.counted == {("ws", "event:e1"), ("ws", "event:e2")}


def test_an_order_held_by_two_profiles_counts_once_after_they_merge() -> None:
    b = _batch()
    _apply(b, _order("e1", "o-1", 40, anonymous_id="anon-1"))
    _apply(b, _order("e2", "o-1", 40, user_id="u-1"))  # the retry, another profile
    assert sorted(p.order_count for p in b.states.values()) == [0, 1]
    _apply(b, _event(id="e3", type="identify", user_id="u-1", anonymous_id="anon-1"))
    [p] = b.states.values()
    assert (p.order_count, p.gross_revenue, p.event_count) == (1, 40, 3)
