"""Property tests (hypothesis) of identity resolution: merges interleaved with identify,
alias, track and erasure never lose an event nor resurrect an erased person.

Generated sequences over a few users, anonymous ids and emails (so that merges, conflicting
user ids and aliases are frequent) go through profile's own code:
- the pure batch (`services/profile/domain/batch.py`), all in one batch, many examples;
- the real application path against Postgres (`pipeline.apply_batch`, `commands.erase`, in
  their transactions), cut into batches where the example says, fewer examples, each in a
  workspace of its own. The outbox rows they write are deleted in the same transactions:
  nothing is published.

Invariants: every applied event has one history row, on a live profile, the one its
strongest identifier resolves to now (it followed every merge); each live profile counts
exactly its history rows; every identity points at a live profile and merged-away profile
ids resolve to their survivor; an erased person's identifiers, profile ids and history never
come back, and later events carrying them are dropped.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import event as note
from hypothesis import settings as examples
from hypothesis import strategies as st
from sqlalchemy import delete, select

from services.profile import commands
from services.profile.domain.batch import Batch, apply_item
from services.profile.domain.conventions import Conventions
from services.profile.domain.identity import Identifier, identifiers, lookup_only
from services.profile.pipeline import apply_batch
from services.profile.tables import events, identities, outbox, profiles
from shared.contracts.events import Event, EventType
from shared.db import create_engine
from shared.settings import Settings

USERS = ["u0", "u1", "u2"]
ANONS = ["a0", "a1", "a2", "a3"]
EMAILS = ["e0@example.com", "e1@example.com"]
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

maybe = st.none().__or__


def _someone(op: tuple[str, Any, Any, Any]) -> tuple[str, Any, Any, Any]:
    """identify and track need a user id or an anonymous id."""
    return op if op[1] or op[2] else (op[0], op[1], "a0", op[3])


identify = st.tuples(st.just("identify"), maybe(st.sampled_from(USERS)),
                     maybe(st.sampled_from(ANONS)), maybe(st.sampled_from(EMAILS))).map(_someone)
track = st.tuples(st.just("track"), maybe(st.sampled_from(USERS)),
                  maybe(st.sampled_from(ANONS)), st.none()).map(_someone)
alias = st.tuples(st.just("alias"), st.sampled_from(USERS), st.sampled_from(USERS + ANONS),
                  st.none()).map(lambda o: o if o[1] != o[2] else (*o[:2], "a1", None))
cut = ("cut", None, None, None)


def _comeback(target: Identifier) -> tuple[str, Any, Any, Any]:
    """An event carrying the identifier an erasure was looked up by (a late event, or a
    re-import): the person must not come back."""
    kind, value = target
    if kind == "user_id":
        return ("track", value, None, None)
    if kind == "anonymous_id":
        return ("track", None, value, None)
    return ("identify", None, "a3", value)


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[str, Any, Any, Any]]:
    """Calls, batch cuts and erasures of someone already seen (by one of their
    identifiers), often followed by that person coming back."""
    ops: list[tuple[str, Any, Any, Any]] = []
    seen: list[Identifier] = []
    for _ in range(draw(st.integers(2, 16))):
        kind = draw(st.sampled_from(["identify", "identify", "track", "alias", "cut"]
                                    + ["erase"] * bool(seen)))
        if kind == "cut":
            ops.append(cut)
        elif kind == "erase":
            target = draw(st.sampled_from(seen))
            ops.append(("erase", target, None, None))
            if draw(st.booleans()):
                ops.append(_comeback(target))
        else:
            op = draw({"identify": identify, "track": track, "alias": alias}[kind])
            ops.append(op)
            found = [("user_id", op[1]), ("email", op[3])] if kind != "alias" \
                else [("user_id", op[1])]
            if kind != "alias":
                found.append(("anonymous_id", op[2]))
            seen += [i for i in found if i[1] and i not in seen]
    return ops


Op = tuple[str, Any, Any, Any]


def _event(ws: str, n: int, op: Op) -> Event:
    kind, a, b, c = op
    fields: dict[str, Any] = {"id": f"e{n}", "workspace_id": ws, "type": EventType(kind),
                              "timestamp": T0 + timedelta(seconds=n),
                              "received_at": T0 + timedelta(seconds=n)}
    if kind == "alias":
        fields |= {"user_id": a, "previous_id": b}
    else:
        fields |= {"user_id": a, "anonymous_id": b}
        if kind == "track":
            fields["event"] = "Viewed"
        elif c:
            fields["traits"] = {"email": c}
    return Event.model_validate(fields)


def _ids(event: Event) -> list[Identifier]:
    return identifiers(event)


# -- the pure batch ----------------------------------------------------------------------

@examples(max_examples=300, deadline=None)
@given(st.lists(st.one_of(identify, track, alias), min_size=1, max_size=25))
def test_one_batch_keeps_every_event_on_its_surviving_profile(ops: list[Op]) -> None:
    b = Batch(T0 + timedelta(days=1), {"ws": Conventions()}, {}, {})
    applied = []
    for n, op in enumerate(ops):
        event = _event("ws", n, op)
        ids = _ids(event)
        apply_item(b, event, ids, lookup_only(event))
        applied.append((event.id, ids[0]))
    owners = b.owners["ws"]
    where = {row["event_id"]: b.live(row["profile_id"]) for row in b.history}
    assert sorted(where) == sorted(e for e, _ in applied)  # each once, none lost
    for event_id, strongest in applied:
        assert where[event_id] in b.states  # on a live profile ...
        assert b.live(owners[strongest]) == where[event_id]  # ... the one it resolves to
    for pid, state in b.states.items():
        assert state.event_count == sum(1 for p in where.values() if p == pid)
    for loser, survivor in b.merges:  # merge chains end at a live profile
        assert loser not in b.states and b.live(survivor) in b.states
    assert all(b.live(pid) in b.states for pid in owners.values())


# -- the real application path -------------------------------------------------------------

@pytest.mark.integration
@pytest.mark.timeout(240)
@examples(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
@example(ops=[  # an erased person's anonymous id comes back, in the next batch and the same
    ("identify", "u0", "a0", "e0@example.com"), ("erase", ("email", "e0@example.com"), None, None),
    ("track", None, "a0", None), ("cut", None, None, None), ("alias", "u1", "a0", None)])
@example(ops=[  # a chain of merges across batches, then the survivor erased
    ("track", None, "a0", None), ("track", None, "a1", None), ("cut", None, None, None),
    ("identify", "u0", "a0", None), ("track", None, "a2", None), ("cut", None, None, None),
    ("identify", "u0", "a1", "e1@example.com"), ("identify", None, "a2", "e1@example.com"),
    ("alias", "u1", "u0", None), ("erase", ("anonymous_id", "a2"), None, None)])
def test_merges_and_erasure_through_postgres_never_lose_or_resurrect(
        settings: Settings, ops: list[Op]) -> None:
    asyncio.run(_run(settings, ops))


async def _run(settings: Settings, ops: list[Op]) -> None:
    ws = f"ws-idp-{uuid.uuid4().hex[:10]}"
    engine = create_engine(settings.database_url, pool_size=1)
    pending: list[Event] = []
    erased_ids: set[Identifier] = set()  # identity rows of erased persons, when erased
    erased_pids: set[str] = set()
    erased_events: set[str] = set()  # history rows an erasure deleted
    dropped: set[str] = set()  # events that carried an erased identifier
    kept: dict[str, Identifier] = {}  # event id -> its strongest identifier

    async def flush() -> None:
        if pending:
            async with engine.begin() as conn:
                rows = await apply_batch(conn, list(pending), settings, T0 + timedelta(days=1))
                await conn.execute(delete(outbox).where(outbox.c.id.in_([r.id for r in rows])))
            pending.clear()

    try:
        for n, op in enumerate(ops):
            if op[0] == "cut":
                await flush()
            elif op[0] == "erase":
                await flush()
                async with engine.begin() as conn:
                    pid = await _owner(conn, ws, op[1])
                    if pid is None:
                        continue
                    erased_ids.update(await _identities_of(conn, ws, pid))
                    erased_pids.update(v for k, v in erased_ids if k == "profile_id")
                    erased_events.update((await conn.execute(select(events.c.event_id).where(
                        events.c.workspace_id == ws, events.c.profile_id == pid))).scalars())
                    rows = await commands.erase(conn, settings, ws, pid, T0 + timedelta(days=1))
                    await conn.execute(delete(outbox).where(
                        outbox.c.id.in_([r.id for r in rows])))
                for event_id in erased_events:
                    kept.pop(event_id, None)
            else:
                event = _event(ws, n, op)
                pending.append(event)
                if erased_ids & set(_ids(event) + lookup_only(event)):
                    dropped.add(event.id)
                else:
                    kept[event.id] = _ids(event)[0]
        await flush()
        note(f"erased {len(erased_pids)} profile ids, dropped {min(len(dropped), 2)}+ events")
        async with engine.connect() as conn:
            await _check(conn, ws, kept, dropped, erased_ids, erased_pids, erased_events)
    finally:
        await engine.dispose()


async def _owner(conn: Any, ws: str, ident: Identifier) -> str | None:
    owner: str | None = (await conn.execute(select(identities.c.profile_id).where(
        identities.c.workspace_id == ws, identities.c.kind == ident[0],
        identities.c.value == ident[1]))).scalar_one_or_none()
    return owner


async def _identities_of(conn: Any, ws: str, pid: str) -> set[Identifier]:
    return {(r.kind, r.value) for r in (await conn.execute(select(
        identities.c.kind, identities.c.value).where(identities.c.workspace_id == ws,
                                                     identities.c.profile_id == pid)))}


async def _check(conn: Any, ws: str, kept: dict[str, Identifier], dropped: set[str],
                 erased_ids: set[Identifier], erased_pids: set[str],
                 erased_events: set[str]) -> None:
    history = {r.event_id: r.profile_id for r in await conn.execute(select(
        events.c.event_id, events.c.profile_id).where(events.c.workspace_id == ws))}
    live = {r.id: r.event_count for r in await conn.execute(select(
        profiles.c.id, profiles.c.event_count).where(profiles.c.workspace_id == ws))}
    owned = {(r.kind, r.value): r.profile_id for r in await conn.execute(select(
        identities.c.kind, identities.c.value, identities.c.profile_id).where(
        identities.c.workspace_id == ws))}
    # Nothing lost: every event that was neither erased nor dropped is there, once ...
    assert set(history) == set(kept), (sorted(set(kept) - set(history)),
                                       sorted(set(history) - set(kept)))
    for event_id, strongest in kept.items():
        # ... on a live profile, the one its strongest identifier resolves to now.
        assert history[event_id] in live
        assert owned[strongest] == history[event_id], (event_id, strongest)
    for pid, count in live.items():  # counted once each, merges included
        assert count == sum(1 for p in history.values() if p == pid), pid
    # Merge chains resolve: every identity (merged-away profile ids too) names a live one.
    assert set(owned.values()) <= set(live)
    # The erased never come back: no identity, profile or history row, later events dropped.
    assert not erased_ids & set(owned), erased_ids & set(owned)
    assert not erased_pids & set(live)
    assert not (erased_events | dropped) & set(history)
