"""The demo's synthetic shop (pure) and its safety check."""

import random
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from services.journey.domain.dates import is_anniversary
from touchpoint import demo_shop
from touchpoint.demo import DemoRefused, Shop, check_mail_catcher

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def test_customers_are_synthetic_and_seeded() -> None:
    shop, again = Shop.new(200, seed=5), Shop.new(200, seed=5)
    assert [c.email for c in shop.customers] == [c.email for c in again.customers]
    assert all(c.email.startswith(f"demo-{shop.run}-") and c.email.endswith("@example.com")
               for c in shop.customers)
    personas = {c.persona for c in shop.customers}
    assert personas == {"regular", "one-timer", "lapsing", "newcomer"}
    for call in shop.history(NOW, lapsing=False) + shop.history(NOW, lapsing=True):
        if call["type"] == "identify":
            assert call["traits"]["demo"] is True


def test_history_is_backdated_and_follows_each_rhythm() -> None:
    rng = random.Random(1)
    for c in demo_shop.customers("r", 100, rng):
        calls = demo_shop.history(c, NOW, rng, "r")
        if c.persona == "newcomer":
            assert calls == []
            continue
        stamps = [datetime.fromisoformat(call["timestamp"]) for call in calls]
        assert all(s < NOW for s in stamps)
        orders = [datetime.fromisoformat(call["timestamp"]) for call in calls
                  if call.get("event") == "Order Completed"]
        last = (NOW - max(orders)).days
        if c.persona == "lapsing":
            assert last >= 1.5 * c.rhythm_days  # at risk or lapsed by their own rhythm
        if c.persona == "regular":
            assert len(orders) >= 3 and last <= c.rhythm_days + 1
        if c.persona == "one-timer":
            assert len(orders) == 1


def test_live_behaviour_covers_every_playbook_early() -> None:
    shop = Shop.new(150, seed=3)
    plan = shop.live(NOW)
    assert all("timestamp" not in call for _, call in plan)  # stamped when sent
    first_minute = {call.get("event") or "identify" for at, call in plan if at <= 60}
    assert first_minute >= {"Signed Up", "Product Viewed", "Product Added", "Order Completed",
                            "Review Submitted", "NPS Survey Submitted", "Survey Responded",
                            "identify"}
    birthdays = [(c, call) for c in shop.customers for _, call in plan
                 if call.get("userId") == c.user_id and "birthday" in call.get("traits", {})]
    assert birthdays
    for customer, call in birthdays:
        assert is_anniversary(call["traits"]["birthday"], NOW, ZoneInfo(customer.timezone))
    assert [at for at, _ in plan] == sorted(at for at, _ in plan)


def test_live_orders_close_their_carts_and_reviews_name_their_order() -> None:
    plan = Shop.new(150, seed=9).live(NOW)
    orders = {c["properties"]["order_id"]: c for _, c in plan if c.get("event") ==
              "Order Completed"}
    assert orders and all(o["properties"]["cart_id"] for o in orders.values())
    reviews = [c for _, c in plan if c.get("event") == "Review Submitted"]
    assert reviews and all(r["properties"]["order_id"] in orders for r in reviews)


def test_the_demo_refuses_a_stack_without_the_dev_mail_catcher() -> None:
    with pytest.raises(DemoRefused, match="--yes"):
        check_mail_catcher({"pid": 1, "urls": {}}, yes=False)
    with pytest.raises(DemoRefused, match="no `touchpoint up`"):
        check_mail_catcher({}, yes=False)
    assert check_mail_catcher({}, yes=True) is None
    assert check_mail_catcher({"mail_catcher": True, "mail_dir": "/x"}, yes=False) == "/x"


def test_kpis_are_read_whatever_their_shape() -> None:
    from touchpoint.demo_dashboard import flat_numbers

    assert flat_numbers({"customers": 10, "active": True, "revenue": {"total": 5.5},
                         "items": [{"name": "repeat_rate", "value": 0.25}], "zone": "UTC"}
                        ) == [("customers", 10), ("revenue.total", 5.5),
                              ("items.repeat_rate", 0.25)]


def test_the_pacer_never_exceeds_its_rate() -> None:
    import time as real_time

    from touchpoint.demo import Pacer

    posted: list[tuple[float, int]] = []

    class Ingest:
        def call(self, service: str, method: str, path: str, **kwargs: object) -> None:
            assert (service, method, path) == ("ingest", "POST", "/v1/batch")
            posted.append((real_time.monotonic(), len(kwargs["json"]["batch"])))  # type: ignore[index]

    pacer = Pacer(Ingest(), rate=500.0)  # type: ignore[arg-type]
    real_time.sleep(0.2)  # idle time buys no burst
    started = real_time.monotonic()
    pacer.send([{"type": "track"}] * 100)
    assert pacer.sent == 100 and [n for _, n in posted] == [25, 25, 25, 25]
    assert posted[-1][0] - started >= 75 / 500 * 0.9  # three batches' worth of waiting
