"""Profile throughput: events/s through identity resolution and metric updates into Postgres,
next to a ceiling measured in the same run: raw asyncpg upserts of the same rows.

Target: the profile consumer's batch path (`services.profile.handlers`' transaction: inbox
claim, identity lookup, profile lock, in-memory resolution and metrics, bulk upsert of
profiles, identities and history, outbox rows) over batches of 500 events, as a poll delivers
them. Ceiling: the same profile and history rows written with plain asyncpg `executemany`
upserts, no reads and no logic. Both run on a scratch database of the Postgres the tests use.

    .venv/bin/python bench/profile.py [--events 30000] [--users 5000] [--batch 500]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from services.profile.pipeline import apply_batch
from services.profile.tables import inbox
from shared.contracts.events import Event
from shared.db import claim_new, create_engine
from shared.db.migrate import upgrade_all
from shared.settings import Settings
from shared.testing.postgres import postgres_server, scratch_database


def workload(n: int, users: int, workspace: str, seed: int = 1) -> list[Event]:
    """Storefront-shaped traffic: browsing, some sign-ups linking devices, orders."""
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(days=30)
    out = []
    for i in range(n):
        u = rng.randrange(users)
        anon = f"anon-{u}-{rng.randrange(2)}"  # two devices per person
        known = rng.random() < 0.6
        kind = rng.random()
        base: dict[str, Any] = {"id": f"e{i}", "workspace_id": workspace,
                                "timestamp": start + timedelta(seconds=i),
                                "received_at": start + timedelta(seconds=i),
                                "anonymous_id": anon}
        if known:
            base["user_id"] = f"user-{u}"
        if kind < 0.1:
            base.update(type="identify", user_id=f"user-{u}",
                        traits={"email": f"user{u}@example.com", "plan": rng.choice("ab")})
        elif kind < 0.25:
            base.update(type="page", name="Home")
        elif kind < 0.35:
            base.update(type="track", event="Order Completed",
                        properties={"revenue": round(rng.uniform(5, 200), 2)})
        else:
            base.update(type="track", event="Product Viewed",
                        properties={"sku": f"sku-{rng.randrange(1000)}"})
        out.append(Event.model_validate(base))
    return out


async def run_target(url: str, settings: Settings, events: list[Event], batch: int) -> float:
    engine = create_engine(url)
    started = time.perf_counter()
    for offset in range(0, len(events), batch):
        chunk = events[offset:offset + batch]
        async with engine.begin() as conn:
            fresh = await claim_new(conn, inbox, "bench", [e.dedupe_id() for e in chunk])
            await apply_batch(conn, [e for e in chunk if e.dedupe_id() in fresh], settings,
                              datetime.now(UTC))
    elapsed = time.perf_counter() - started
    await engine.dispose()
    return elapsed


async def run_ceiling(url: str, events: list[Event], batch: int) -> float:
    """Same tables, same row counts: one profile upsert and one history row per event."""
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    ws = f"ceiling-{uuid.uuid4().hex[:6]}"
    upsert = ("INSERT INTO profile.profiles (id, workspace_id, user_id, traits, event_count, "
              "order_count, gross_revenue, first_seen_at, last_seen_at) "
              "VALUES ($1, $2, $3, $4::jsonb, 1, $5, $6, $7, $7) ON CONFLICT (id) DO UPDATE SET "
              "event_count = profiles.event_count + 1, order_count = profiles.order_count + "
              "excluded.order_count, gross_revenue = profiles.gross_revenue + "
              "excluded.gross_revenue, traits = profiles.traits || excluded.traits, "
              "last_seen_at = excluded.last_seen_at")
    history = ("INSERT INTO profile.events (workspace_id, event_id, profile_id, type, name, "
               "properties, timestamp, received_at) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, "
               "$8) ON CONFLICT DO NOTHING")
    started = time.perf_counter()
    for offset in range(0, len(events), batch):
        chunk = events[offset:offset + batch]
        # One upsert per distinct profile per batch, as the target writes them.
        latest: dict[str, Event] = {e.user_id or e.anonymous_id or "": e for e in chunk}
        async with conn.transaction():
            await conn.executemany(upsert, [
                (f"{ws}:{key}"[:36], ws, e.user_id, orjson.dumps(e.traits).decode(),
                 int(e.event == "Order Completed"), float(e.properties.get("revenue", 0)),
                 e.timestamp) for key, e in latest.items()])
            await conn.executemany(history, [
                (ws, e.id, f"{ws}:{e.user_id or e.anonymous_id}"[:36], e.type.value,
                 e.event or e.name, orjson.dumps(e.properties).decode(), e.timestamp,
                 e.received_at) for e in chunk])
    elapsed = time.perf_counter() - started
    await conn.close()
    return elapsed


async def main(n: int, users: int, batch: int) -> None:
    with postgres_server() as server, scratch_database(server) as url:
        upgrade_all(url)
        settings = Settings(env="test", database_url=url, topic_prefix="bench.")
        events = workload(n, users, f"bench-{uuid.uuid4().hex[:6]}")
        target = await run_target(url, settings, events, batch)
        ceiling = await run_ceiling(url, events, batch)
        t_rate, c_rate = n / target, n / ceiling
        print(f"profile bench: {n} events, {users} people (2 devices each), batches of {batch}")
        print(f"  target  (resolution + metrics + history + outbox): {t_rate:9.0f} events/s "
              f"({target:.2f} s)")
        print(f"  ceiling (raw asyncpg upserts of the same rows):    {c_rate:9.0f} events/s "
              f"({ceiling:.2f} s)")
        print(f"  ratio target / ceiling = {t_rate / c_rate:.0%}  (goal: >= 5000 events/s "
              f"and >= 40%)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.users, args.batch))
