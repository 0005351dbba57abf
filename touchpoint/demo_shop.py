"""The synthetic shop of `touchpoint demo`: customers, their backdated history and what
they do while the demo runs, as Segment calls (pure, seeded; nothing is sent here).

Personas give different purchase rhythms: `regular` buyers (several orders every 10-30
days), `one-timer`s, `lapsing` customers (a rhythm they stopped keeping: at risk or
lapsed), and `newcomer`s who sign up during the demo. Every customer is `demo-<run>-<n>`,
`…@example.com`, with the trait `demo: true`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

PERSONAS = (("regular", 35), ("one-timer", 25), ("lapsing", 20), ("newcomer", 20))
ZONES = ("Europe/Paris", "Europe/London", "America/New_York", "America/Los_Angeles",
         "Asia/Tokyo", "Australia/Sydney", "UTC")
NAMES = ("Ada", "Alan", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances",
         "Edsger", "Radia", "Tim", "Katherine", "Guido", "Hedy", "John")
PRODUCTS = (("p-mug", "Stoneware mug", 18.0), ("p-beans", "Coffee beans 1 kg", 24.0),
            ("p-filter", "Paper filters (100)", 6.5), ("p-grinder", "Hand grinder", 89.0),
            ("p-kettle", "Gooseneck kettle", 59.0), ("p-scale", "Brew scale", 35.0))
REASONS = ("too expensive", "found another shop", "did not need more", "delivery too slow")


@dataclass
class Customer:
    number: int
    user_id: str
    email: str
    first_name: str
    timezone: str
    persona: str
    rhythm_days: float
    orders: int = 0
    birthday_today: bool = False
    calls: list[dict[str, Any]] = field(default_factory=list)


def customers(run: str, count: int, rng: random.Random) -> list[Customer]:
    weights = [w for _, w in PERSONAS]
    out = []
    for n in range(count):
        persona = rng.choices([p for p, _ in PERSONAS], weights)[0]
        user = f"demo-{run}-{n:04d}"
        out.append(Customer(n, user, f"{user}@example.com", rng.choice(NAMES),
                            rng.choice(ZONES), persona, rng.uniform(10, 30),
                            birthday_today=rng.random() < 0.12))
    return out


def _at(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _identify(c: Customer, at: datetime, **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": c.user_id, "timestamp": _at(at),
            "traits": {"email": c.email, "first_name": c.first_name, "demo": True, **traits},
            "context": {"timezone": c.timezone}}


def _track(c: Customer, event: str, at: datetime, **properties: Any) -> dict[str, Any]:
    return {"type": "track", "userId": c.user_id, "event": event, "timestamp": _at(at),
            "properties": properties}


def _order(c: Customer, at: datetime, rng: random.Random, run: str, **extra: Any
           ) -> dict[str, Any]:
    c.orders += 1
    product_id, name, price = rng.choice(PRODUCTS)
    quantity = rng.randint(1, 3)
    return _track(c, "Order Completed", at, order_id=f"o-{run}-{c.number}-{c.orders}",
                  total=round(price * quantity, 2), currency="EUR",
                  products=[{"product_id": product_id, "name": name, "price": price,
                             "quantity": quantity}], **extra)


def history(c: Customer, now: datetime, rng: random.Random, run: str) -> list[dict[str, Any]]:
    """Backdated calls (Segment `timestamp`) that give the customer a past: sign-up, views,
    orders at their rhythm, the odd refund. Newcomers have none."""
    if c.persona == "newcomer":
        return []
    if c.persona == "regular":
        count, last = rng.randint(3, 6), now - timedelta(days=rng.uniform(1, c.rhythm_days))
    elif c.persona == "lapsing":
        count = rng.randint(2, 4)
        last = now - timedelta(days=c.rhythm_days * rng.uniform(1.7, 4.5))
    else:
        count, last = 1, now - timedelta(days=rng.uniform(5, 40))
    first = last - timedelta(days=c.rhythm_days * (count - 1))
    calls = [_identify(c, first - timedelta(days=2)),
             _track(c, "Signed Up", first - timedelta(days=2))]
    for k in range(count):
        at = min(first + timedelta(days=c.rhythm_days * k, minutes=rng.uniform(0, 600)),
                 now - timedelta(hours=1))
        product_id, name, _ = rng.choice(PRODUCTS)
        calls.append(_track(c, "Product Viewed", at - timedelta(minutes=20),
                            product_id=product_id, name=name))
        calls.append(_order(c, at, rng, run))
        if rng.random() < 0.08:
            calls.append(_track(c, "Order Refunded",
                                min(at + timedelta(days=3), now - timedelta(minutes=10)),
                                order_id=calls[-1]["properties"]["order_id"]))
    return calls


def _birthday(c: Customer, now: datetime, rng: random.Random) -> str:
    today = now.astimezone(ZoneInfo(c.timezone)).date()
    year = rng.randint(1965, 2004)
    day = today.day if not (today.month, today.day) == (2, 29) else 28
    return date(year, today.month, day).isoformat()


def live(c: Customer, start: datetime, rng: random.Random, run: str
         ) -> list[tuple[float, dict[str, Any]]]:
    """What the customer does during the demo: (seconds after the start, call). Every
    playbook gets customers within the first minute; the rest trickles on."""
    out: list[tuple[float, dict[str, Any]]] = []
    t = rng.uniform(0, 45)

    def at(offset: float) -> datetime:
        return start + timedelta(seconds=offset)

    if c.persona == "newcomer":
        out += [(t, _identify(c, at(t))), (t + 0.5, _track(c, "Signed Up", at(t + 0.5)))]
        t += rng.uniform(3, 10)
    if c.birthday_today:
        out.append((rng.uniform(0, 20), _identify(c, at(0), birthday=_birthday(c, start, rng))))
    product_id, name, price = rng.choice(PRODUCTS)
    roll = rng.random()
    if roll < 0.3:  # browses and leaves: abandoned browse
        out.append((t, _track(c, "Product Viewed", at(t), product_id=product_id, name=name)))
    elif roll < 0.55:  # carts and leaves: abandoned cart
        cart = f"c-{run}-{c.number}"
        out.append((t, _track(c, "Product Viewed", at(t), product_id=product_id, name=name)))
        out.append((t + 3, _track(c, "Product Added", at(t + 3), cart_id=cart,
                                  product_id=product_id, name=name, price=price)))
    elif roll < 0.85 or c.persona == "newcomer":  # buys: review, second purchase, refill
        cart = f"c-{run}-{c.number}"
        out.append((t, _track(c, "Product Added", at(t), cart_id=cart, product_id=product_id,
                              name=name, price=price)))
        order = _order(c, at(t + 4), rng, run, cart_id=cart)
        out.append((t + 4, order))
        order_id = order["properties"]["order_id"]
        after = t + rng.uniform(25, 60)
        if rng.random() < 0.1:
            out.append((t + 8, _track(c, "Order Refunded", at(t + 8), order_id=order_id)))
        elif rng.random() < 0.5:
            out.append((after, _track(c, "Review Submitted", at(after), order_id=order_id,
                                      rating=rng.randint(3, 5))))
    if c.persona in ("regular", "one-timer") and rng.random() < 0.35:
        when = rng.uniform(5, 60)
        out.append((when, _track(c, "NPS Survey Submitted", at(when), score=rng.choice(
            [0, 2, 4, 5, 6, 7, 8, 8, 9, 9, 10, 10]))))
    if c.persona == "lapsing" and rng.random() < 0.5:
        when = rng.uniform(20, 50)
        out.append((when, _track(c, "Survey Responded", at(when), survey="exit",
                                 reason=rng.choice(REASONS))))
    return out
