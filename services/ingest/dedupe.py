"""`messageId` dedupe that survives retries and restarts: claim, publish, confirm.

The protocol (one Postgres round trip per request on the happy path):

1. `claim(workspace, ids)` inserts the ids under a fresh claim token. On conflict it takes
   over only a row whose claim is older than the lease and was never acknowledged (its
   request crashed or failed). The ids it returns are this request's to publish.
2. Ids it did not return are either **duplicates** (their claim is in `acked_claims`: the
   event was accepted before) or **in flight** (a concurrent request holds a fresh claim and
   has not been acked yet). A second query tells which; it runs only when there are conflicts.
3. After the broker acked, `confirm(token)` queues the token; a background writer inserts
   the queued tokens into `acked_claims` in one statement per flush.
4. If publishing failed, `release` deletes the rows of the events the producer did not
   deliver, so the client's retry can claim them at once (services/ingest/acceptance.py
   waits for the producer's verdict first).

What can go wrong: a crash between 1 and 3 leaves an unacknowledged claim; after the lease
a retry re-claims and publishes it, so nothing acknowledged is lost. A crash after the
broker ack but before the flush lets a retry past the lease publish the event a second
time: downstream consumers drop it by event id (at-least-once, never at-most-once).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from services.ingest.acks import AckWriter

log = logging.getLogger(__name__)

# Longer than a claim's outcome can stay open: 1 s to publish, then up to 25 s for
# the producer to settle a failed publish (services/ingest/acceptance.py).
CLAIM_LEASE_S = 60.0
WINDOW_HOURS = 48  # the issue asks for >= 24 h; purge keeps the table bounded
MAX_CLAIM_STATEMENTS = 2  # claim statements in flight at once

# Claims of several concurrent requests go in one statement. Each id carries the 1-based
# ordinal of its request, which indexes the per-request workspace and token arrays. It
# answers only the ids that were already there (usually none): the rest are claimed.
# Rows go in key order, so concurrent statements (or replicas) wanting the same ids take
# their locks in the same order and cannot deadlock.
_CLAIM = """
WITH u AS (
    SELECT ($1::text[])[r] AS w, id, ($2::uuid[])[r] AS c
      FROM unnest($3::text[], $4::int[]) AS t(id, r)),
ins AS (
    INSERT INTO ingest.message_ids (workspace_id, message_id, claim, claimed_at)
    SELECT w, id, c, now() FROM u ORDER BY w, id
    ON CONFLICT (workspace_id, message_id) DO NOTHING
    RETURNING workspace_id, message_id)
SELECT u.c, u.w, u.id FROM u
 WHERE NOT EXISTS (SELECT 1 FROM ins WHERE ins.workspace_id = u.w AND ins.message_id = u.id)
"""
# Ids already there are taken over only when their claim is stale and was never acked.
_RECLAIM = """
UPDATE ingest.message_ids AS m SET claim = u.c, claimed_at = now()
  FROM unnest($1::text[], $2::text[], $3::uuid[]) AS u(w, id, c)
 WHERE m.workspace_id = u.w AND m.message_id = u.id
   AND m.claimed_at < now() - make_interval(secs => $4)
   AND NOT EXISTS (SELECT 1 FROM ingest.acked_claims a WHERE a.claim = m.claim)
RETURNING u.c, m.message_id
"""
_CLASSIFY = """
SELECT u.c, m.message_id, m.claim,
       EXISTS (SELECT 1 FROM ingest.acked_claims a WHERE a.claim = m.claim) AS acked
  FROM unnest($1::text[], $2::text[], $3::uuid[]) AS u(w, id, c)
  JOIN ingest.message_ids m ON m.workspace_id = u.w AND m.message_id = u.id
"""
_RELEASE = """
DELETE FROM ingest.message_ids
 WHERE workspace_id = $1 AND message_id = ANY($2::text[]) AND claim = $3
"""
@dataclass
class Claim:
    """What `claim` decided for each id of one request."""

    token: uuid.UUID
    mine: list[str] = field(default_factory=list)
    duplicates: set[str] = field(default_factory=set)
    in_flight: set[str] = field(default_factory=set)


# A request waiting for its claim: workspace, ids, the Claim to fill, done when filled.
_Waiting = tuple[str, list[str], Claim, "asyncio.Future[None]"]


async def _keep_session(_conn: Any) -> None:
    """asyncpg's default reset runs a query (RESET ALL; ...) each time a connection goes
    back to the pool: a second round trip per claim. These connections only run the
    statements above and change no session state, so there is nothing to reset."""


def asyncpg_dsn(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


class Deduper:
    """Owns its small asyncpg pool: the hot path skips SQLAlchemy's per-statement cost."""

    def __init__(self, database_url: str, *, lease_s: float = CLAIM_LEASE_S,
                 window_hours: int = WINDOW_HOURS, flush_interval_s: float = 0.02) -> None:
        self.dsn = asyncpg_dsn(database_url)
        self.lease_s, self.window_hours = lease_s, window_hours
        self.flush_interval_s = flush_interval_s
        self._pool: Any = None
        self._waiting: list[_Waiting] = []
        self._drainers: set[asyncio.Task[None]] = set()
        self.acks: AckWriter | None = None

    async def start(self) -> None:
        # min_size=0: no connection at start, so start-up never blocks on Postgres.
        # Short timeouts: with Postgres away, requests answer 503 in about a second.
        # synchronous_commit=off: a claim does not wait for the WAL flush (the slowest and
        # most variable part of the round trip). Only a crash of the Postgres server can
        # lose the last ~0.6 s of claims; a retry of one of those then publishes again,
        # a duplicate that consumers drop by event id. An event is never lost by it.
        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=0, max_size=8, timeout=1.5, command_timeout=5,
            server_settings={"synchronous_commit": "off",
                             "application_name": "touchpoint-ingest-dedupe"},
            reset=_keep_session)
        self.acks = AckWriter(self._pool, window_hours=self.window_hours,
                              flush_interval_s=self.flush_interval_s)
        self.acks.start()

    async def claim(self, workspace_id: str, message_ids: list[str]) -> Claim:
        """Claim distinct ids for this request; see the module docstring.

        Requests that arrive while claim statements run are claimed together in the next
        one: one round trip for many requests under load, none added when idle. Two
        statements may run at once, so one slow statement does not hold up every request.
        """
        result = Claim(token=uuid.uuid4())
        if not message_ids:
            return result
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((workspace_id, message_ids, result, future))
        # A drainer that has finished is done at once, but leaves the set only in a later
        # callback: count the running ones, or this request could wait for nobody.
        self._drainers = {d for d in self._drainers if not d.done()}
        if len(self._drainers) < MAX_CLAIM_STATEMENTS:
            self._drainers.add(asyncio.create_task(self._drain()))
        await future
        return result

    async def _drain(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await self._claim_together(batch)
            except Exception as exc:
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for *_, future in batch:
                    if not future.done():
                        future.set_result(None)

    async def _claim_together(self, batch: list[_Waiting]) -> None:
        wanted: dict[tuple[str, str], Claim] = {}  # (workspace, id) -> the claim asking first
        for workspace_id, message_ids, claim, _ in batch:
            for message_id in message_ids:
                if (workspace_id, message_id) in wanted:
                    # Two requests of this round want the same id: the first one holds it.
                    claim.in_flight.add(message_id)
                else:
                    wanted[(workspace_id, message_id)] = claim
        by_token = {claim.token: claim for *_, claim, _ in batch}
        ordinal = {token: i for i, token in enumerate(by_token, 1)}
        workspaces = [workspace_id for workspace_id, *_ in batch]
        not_mine: set[tuple[uuid.UUID, str]] = set()
        async with self._pool.acquire() as conn:
            taken = await conn.fetch(_CLAIM, workspaces, list(by_token),
                                     [m for _, m in wanted],
                                     [ordinal[c.token] for c in wanted.values()])
            if taken:
                not_mine = await self._settle_conflicts(conn, taken, by_token)
        for (_, message_id), claim in wanted.items():
            if (claim.token, message_id) not in not_mine:
                claim.mine.append(message_id)

    async def _settle_conflicts(self, conn: Any, taken: list[Any],
                                by_token: dict[uuid.UUID, Claim]) -> set[tuple[uuid.UUID, str]]:
        """Ids that existed: re-claim the stale ones, sort the others into duplicates and
        in-flight. Returns the (token, id) pairs that are not the asker's to publish."""
        columns = [[w for _, w, _ in taken], [m for _, _, m in taken], [t for t, _, _ in taken]]
        retaken = {(t, m) for t, m in await conn.fetch(_RECLAIM, *columns, self.lease_s)}
        rest = [(w, m, t) for t, w, m in taken if (t, m) not in retaken]
        if not rest:
            return set()
        seen = set()
        for asker, message_id, holder, acked in await conn.fetch(
                _CLASSIFY, *map(list, zip(*rest, strict=True))):
            # Acked but not yet flushed by this process counts as acked.
            done = acked or (self.acks is not None and self.acks.pending(holder))
            claim = by_token[asker]
            (claim.duplicates if done else claim.in_flight).add(message_id)
            seen.add((asker, message_id))
        for _, message_id, token in rest:
            if (token, message_id) not in seen:  # released meanwhile: the retry decides
                by_token[token].in_flight.add(message_id)
        return {(t, m) for _, m, t in rest}

    def confirm(self, claim: Claim) -> None:
        """The broker acked every event of `claim.mine`: record it (batched, in background)."""
        if claim.mine and self.acks is not None:
            self.acks.add(claim.token)

    async def release(self, workspace_id: str, claim: Claim, message_ids: list[str]) -> None:
        """These ids of `claim` did not reach the broker: give them back so a retry can
        claim them now, not after the lease. Best effort: if Postgres is down too, the
        lease frees them."""
        if not message_ids:
            return
        try:
            async with self._pool.acquire() as conn:
                await conn.execute(_RELEASE, workspace_id, message_ids, claim.token)
        except Exception as exc:
            log.warning("could not release %d claimed ids (%s); the lease frees them",
                        len(message_ids), type(exc).__name__)

    async def close(self, timeout: float = 1.5) -> None:
        """Write the pending acknowledgements (requests have drained by now), then close."""
        if self.acks is not None:
            await self.acks.close(timeout)
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), timeout)
            except TimeoutError:
                self._pool.terminate()
