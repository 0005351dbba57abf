"""What journey prunes, and why each cut-off is safe (see docs/journey.md#retention).

- `inbox`: ids older than TOUCHPOINT_INBOX_RETENTION_HOURS (shared/db/retention.py).
- `sends`: read only by frequency caps (`unit._load_common` reads back as far as the
  longest cap of the live and in-flight versions). Kept for the longest cap of any
  published version, and at least TOUCHPOINT_JOURNEY_SENDS_RETENTION_DAYS so that a cap
  published later still finds its history. The stats read decisions, not sends.
- `decisions`: the "why?" trace and the stats' transitions, times in stage and sends per
  step. A decision goes once it is older than the trace retention and its instance ended
  before that too (or it has no instance: refused entries), so an instance's trace is
  never cut while it runs, and the trace of a finished one goes as a whole.
Instances are kept: the entry policy (`once`, cooldowns) and the stats read them.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.journey.domain.document import Cap
from services.journey.domain.policy import ContactPolicy
from services.journey.settings import JourneySettings
from services.journey.tables import inbox, journey_versions, policies
from shared.db.retention import CHUNK, Prune, delete_in_chunks, inbox_prune


async def longest_cap(engine: AsyncEngine) -> timedelta:
    """The longest cap window of any published version or contact policy (any workspace)."""
    caps = journey_versions.c.document["frequency_cap"]
    async with engine.connect() as conn:
        rows = (await conn.execute(select(caps).where(caps.is_not(None)))).scalars().all()
    longest = max((Cap.model_validate(cap).per for per_channel in rows if per_channel
                   for cap in per_channel.values()), default=timedelta(0))
    async with engine.connect() as conn:  # and every workspace's contact policy
        documents = (await conn.execute(select(policies.c.document))).scalars().all()
    return max([longest, *(ContactPolicy.model_validate(d).lookback for d in documents)])


async def prune_sends(engine: AsyncEngine, now: datetime, keep_at_least: timedelta,
                      chunk: int = CHUNK) -> int:
    cutoff = now - max(keep_at_least, await longest_cap(engine))
    return await delete_in_chunks(engine, """
        DELETE FROM journey.sends WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM journey.sends WHERE sent_at < :cutoff
             LIMIT :chunk FOR UPDATE SKIP LOCKED))""", {"cutoff": cutoff}, chunk)


# One chunk of the walk along decisions' primary key (ids grow with time): delete the old
# ones of finished (or no) instances; report where the chunk ended and its oldest decision.
_DECISIONS_CHUNK = text("""
WITH chunk AS (
    SELECT id, instance_id, at FROM journey.decisions WHERE id > :after ORDER BY id
     LIMIT :chunk),
doomed AS (
    SELECT c.id FROM chunk c LEFT JOIN journey.instances i ON i.id = c.instance_id
     WHERE c.at < :cutoff
       AND (i.id IS NULL OR (i.status <> 'active' AND i.ended_at < :cutoff))),
gone AS (DELETE FROM journey.decisions WHERE id IN (SELECT id FROM doomed) RETURNING 1)
SELECT (SELECT max(id) FROM chunk) AS last, (SELECT min(at) FROM chunk) AS oldest,
       (SELECT count(*) FROM gone) AS deleted
""")


async def prune_decisions(engine: AsyncEngine, now: datetime, keep: timedelta,
                          chunk: int = CHUNK) -> int:
    """Walk from the oldest decision in chunks (one short transaction each) and stop at the
    first chunk that starts inside the window. Old decisions of still-active instances
    stay, and are walked over again by the next pass."""
    cutoff, total = now - keep, 0
    after = -(2**63)  # the smallest bigint: from the very first id, whatever it is
    while True:
        async with engine.begin() as conn:
            row = (await conn.execute(_DECISIONS_CHUNK, {
                "after": after, "chunk": chunk, "cutoff": cutoff})).one()
        total += int(row.deleted)
        if row.last is None or row.oldest >= cutoff:
            return total
        after = row.last


def journey_prunes(settings: JourneySettings) -> dict[str, Prune]:
    sends_keep = timedelta(days=settings.journey_sends_retention_days)
    trace_keep = timedelta(days=settings.journey_trace_retention_days)

    async def sends(engine: AsyncEngine, now: datetime) -> int:
        return await prune_sends(engine, now, sends_keep)

    async def decisions(engine: AsyncEngine, now: datetime) -> int:
        return await prune_decisions(engine, now, trace_keep)

    return {"inbox": inbox_prune(inbox, timedelta(hours=settings.inbox_retention_hours)),
            "sends": sends, "decisions": decisions}
