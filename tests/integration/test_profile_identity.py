"""Identity resolution against the real broker and Postgres: merges, redelivery, reordering."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from profile_support import ProfileWorld, eventually, profile_world

from shared.settings import Settings
from shared.testing.topics import read_until

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(settings: Settings, topics: list[str]) -> AsyncIterator[ProfileWorld]:
    async for w in profile_world(settings):
        yield w


async def _until(world: ProfileWorld, headers: dict[str, str], check: Any,
                 **ident: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        found = await world.lookup(headers, **ident)
        return found if found and check(found) else None
    return await eventually(probe)


async def test_anonymous_browsing_then_sign_up_is_one_profile(world: ProfileWorld) -> None:
    ws, h = await world.workspace()
    await world.send(ws, {"type": "page", "name": "Home", "anonymous_id": "a1"},
                     {"type": "track", "event": "Product Viewed", "anonymous_id": "a1"},
                     {"type": "identify", "user_id": "u1", "anonymous_id": "a1",
                      "traits": {"email": " Ada@Example.COM ", "first_name": "Ada",
                                 "phone": "+1 650-253-0000"}})
    p = await _until(world, h, lambda p: p["event_count"] == 3, user_id="u1")
    assert p["email"] == "ada@example.com" and p["phone"] == "+16502530000"
    assert p["traits"]["first_name"] == "Ada"
    assert set(p["trait_seen"]["first_name"]) == {"first_seen_at", "last_seen_at"}
    for ident in ({"anonymous_id": "a1"}, {"email": "ADA@example.com"},
                  {"phone": "+1 (650) 253-0000"}):
        assert (await world.lookup(h, **ident))["id"] == p["id"]
    events = (await world.http.get(f"/v1/profiles/{p['id']}/events", headers=h,
                                   params={"limit": 2})).json()["items"]
    assert len(events) == 2
    # One profile from the start: nothing was merged (and `created` is not emitted).
    changes = await world.changes(ws, lambda cs: any(c["kind"] == "traits_changed" for c in cs)
                                  or True)
    assert not [c for c in changes if c["kind"] in ("merged", "created")]


async def test_two_devices_merge_and_keep_both_histories(world: ProfileWorld) -> None:
    ws, h = await world.workspace()
    await world.send(ws,
                     {"type": "track", "event": "Order Completed", "anonymous_id": "phone",
                      "properties": {"revenue": 30}},
                     {"type": "track", "event": "Order Completed", "anonymous_id": "laptop",
                      "properties": {"total": 70}},
                     {"type": "identify", "user_id": "u2", "anonymous_id": "phone"})
    first = await _until(world, h, lambda p: p["event_count"] == 2, user_id="u2")
    laptop = await world.lookup(h, anonymous_id="laptop")
    assert laptop and laptop["id"] != first["id"]
    await world.send(ws, {"type": "identify", "user_id": "u2", "anonymous_id": "laptop"})
    merged = await _until(world, h, lambda p: p["event_count"] == 4, user_id="u2")
    assert merged["id"] == first["id"]
    assert merged["metrics"]["order_count"] == 2 and merged["metrics"]["revenue"] == 100
    assert (await world.lookup(h, anonymous_id="laptop"))["id"] == merged["id"]
    # The merged-away id still resolves, to the survivor.
    r = await world.http.get(f"/v1/profiles/{laptop['id']}", headers=h)
    assert r.status_code == 200 and r.json()["id"] == merged["id"]
    # ... and the survivor names it (its messages and journeys keep the old id).
    assert r.json()["merged_ids"] == [laptop["id"]] and laptop["merged_ids"] == []
    changes = await world.changes(ws, lambda cs: any(c["kind"] == "merged" for c in cs))
    merge = next(c for c in changes if c["kind"] == "merged")
    assert merge["profile_id"] == merged["id"] and merge["data"]["merged_ids"] == [laptop["id"]]
    history = (await world.http.get(f"/v1/profiles/{merged['id']}/events", headers=h)).json()
    assert len(history["items"]) == 4


async def test_alias_chain_folds_into_one_profile(world: ProfileWorld) -> None:
    ws, h = await world.workspace()
    await world.send(ws, {"type": "track", "event": "Viewed", "anonymous_id": "anon-x"},
                     {"type": "alias", "user_id": "b", "previous_id": "anon-x"},
                     {"type": "track", "event": "Viewed", "user_id": "c"},
                     {"type": "alias", "user_id": "c", "previous_id": "b"})
    p = await _until(world, h, lambda p: p["event_count"] == 4, user_id="c")
    assert (await world.lookup(h, anonymous_id="anon-x"))["id"] == p["id"]
    assert (await world.lookup(h, user_id="b"))["id"] == p["id"]


async def test_shared_email_merges_but_not_two_accounts(world: ProfileWorld) -> None:
    ws, h = await world.workspace()
    await world.send(ws, {"type": "identify", "anonymous_id": "k1",
                          "traits": {"email": "kim@example.com"}},
                     {"type": "identify", "anonymous_id": "k2",
                      "traits": {"email": "KIM@example.com", "plan": "pro"}})
    p = await _until(world, h, lambda p: p["event_count"] == 2, email="kim@example.com")
    assert (await world.lookup(h, anonymous_id="k2"))["id"] == p["id"]
    # Two different accounts sharing a family address stay two people.
    await world.send(ws, {"type": "identify", "user_id": "mum", "traits": {"email": "f@x.io"}},
                     {"type": "identify", "user_id": "dad", "traits": {"email": "f@x.io"}})
    dad = await _until(world, h, lambda p: p["event_count"] == 1, user_id="dad")
    mum = await world.lookup(h, user_id="mum")
    assert mum and mum["id"] != dad["id"]


async def test_redelivery_and_reordering_give_the_same_result(world: ProfileWorld) -> None:
    ws, h = await world.workspace()
    order = {"type": "track", "event": "Order Completed", "anonymous_id": "d1",
             "properties": {"revenue": 10}, "id": "order-1"}
    await world.send(ws, order, order)  # the same message id twice: applied once
    # Reordered: the identify linking d2 arrives before d2's own events.
    await world.send(ws, {"type": "identify", "user_id": "u9", "anonymous_id": "d1"},
                     {"type": "identify", "user_id": "u9", "anonymous_id": "d2"},
                     {"type": "track", "event": "Order Completed", "anonymous_id": "d2",
                      "properties": {"revenue": 5}})
    p = await _until(world, h, lambda p: p["event_count"] == 4, user_id="u9")
    assert p["metrics"]["order_count"] == 2 and p["metrics"]["revenue"] == 15
    assert (await world.lookup(h, anonymous_id="d2"))["id"] == p["id"]



async def test_a_poison_event_goes_to_the_dlq_and_its_neighbours_are_applied(
        world: ProfileWorld) -> None:
    ws, h = await world.workspace()
    # A NUL character can never be stored (Postgres refuses it in JSONB). Ingest refuses it,
    # and so does the events model: published anyway, it is a poison message.
    await world.send(ws, {"type": "track", "event": "Viewed", "user_id": "p1"})
    await world.send(ws, {"type": "track", "event": "Viewed", "user_id": "p1", "id": "poison-1",
                          "properties": {"note": "nul \u0000 here"}}, checked=False)
    await world.send(ws, {"type": "track", "event": "Viewed", "user_id": "p1"})
    p = await _until(world, h, lambda p: p["event_count"] == 2, user_id="p1")
    assert p["event_count"] == 2
    dead = await read_until(world.settings.kafka_bootstrap, world.settings.topic("dlq"),
                            lambda rs: any(dict(r.headers).get("dlq.consumer") == b"profile.events"
                                           and b"poison-1" in r.value for r in rs))
    record = next(r for r in dead if b"poison-1" in r.value)
    assert dict(record.headers)["dlq.error"]
