"""A storefront's retried order (same order_id, another messageId, so the inbox lets it in)
counts once on the profile: order count, revenue, RFM; through the real broker and Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from profile_support import ProfileWorld, eventually, profile_world

from shared.settings import Settings

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(settings: Settings, topics: list[str]) -> AsyncIterator[ProfileWorld]:
    async for w in profile_world(settings):
        yield w


def order(order_id: str, revenue: float, **who: str) -> dict[str, Any]:
    return {"type": "track", "event": "Order Completed", **who,
            "properties": {"order_id": order_id, "revenue": revenue}}


async def _once(world: ProfileWorld, h: dict[str, str], events: int,
                **ident: str) -> dict[str, Any]:
    """The profile once it has applied `events` events (so the retry was read, not lost)."""
    async def probe() -> dict[str, Any] | None:
        p = await world.lookup(h, **ident)
        return p if p and p["metrics"]["event_count"] == events else None
    return await eventually(probe)


async def test_a_retried_order_counts_once_in_metrics_rfm_and_kpis(world: ProfileWorld) -> None:
    ws, h = await world.workspace()
    for n, value in enumerate((100, 200, 300, 400), 1):
        await world.send(ws, order(f"o-{n}", value, user_id=f"u{n}"))
    first = await world.send(ws, order("r-1", 150, user_id="r"))
    await _once(world, h, 1, user_id="r")
    # The retry comes in a later batch: only kpi_orders can tell it was counted.
    retry = await world.send(ws, order("r-1", 150, user_id="r"))
    assert retry != first
    await world.send(ws, {"type": "track", "event": "Order Refunded", "user_id": "r",
                          "properties": {"order_id": "r-1", "revenue": 50}})
    m = (await _once(world, h, 3, user_id="r"))["metrics"]
    assert (m["order_count"], m["gross_revenue"], m["refunded"], m["revenue"]) == \
        (1, 150, 50, 100)
    assert m["refund_count"] == 1 and m["average_order_value"] == 100
    for n in range(1, 5):
        await _once(world, h, 1, user_id=f"u{n}")

    r = await world.http.post("/v1/profile-settings/recompute", headers=h)
    assert r.status_code == 200 and r.json()["customers"] == 5, r.text
    # Counted once, r's monetary (150 - 50) ties with u1's 100: score 2, and every customer
    # has one order: frequency 5 for all. Counted twice it would be 250 (3) and 2 orders (5,
    # the others 4).
    m = (await _once(world, h, 3, user_id="r"))["metrics"]
    assert (m["rfm_frequency"], m["rfm_monetary"]) == (5, 2)
    assert (await _once(world, h, 1, user_id="u4"))["metrics"]["rfm_frequency"] == 5
    t = (await world.http.get("/v1/kpis", headers=h)).json()["totals"]
    assert (t["sales"]["orders"], t["sales"]["gross_revenue"]) == (5, 1150)


async def test_an_order_on_two_profiles_counts_once_after_they_merge(
        world: ProfileWorld) -> None:
    ws, h = await world.workspace()
    await world.send(ws, order("m-1", 80, anonymous_id="anon-m"))
    await _once(world, h, 1, anonymous_id="anon-m")
    await world.send(ws, order("m-1", 80, user_id="m"))  # the retry, as the signed-in user
    p = await _once(world, h, 1, user_id="m")
    assert p["metrics"]["order_count"] == 0
    await world.send(ws, {"type": "identify", "user_id": "m", "anonymous_id": "anon-m"})
    m = (await _once(world, h, 3, user_id="m"))["metrics"]
    assert (m["order_count"], m["gross_revenue"]) == (1, 80)
