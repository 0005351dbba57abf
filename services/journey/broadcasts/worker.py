"""The durable broadcast worker: starts scheduled broadcasts and paces the sending ones.

Each tick claims broadcasts FOR UPDATE SKIP LOCKED, so replicas share them without
coordination, and paces each with its own clock (`tick_at`): at most `throttle_per_second`
per broadcast, and at most the policy's `max_per_second` for all of a workspace's
broadcasts together (the policy row's `tick_at`, locked the same way). A crash before
commit releases the claims; after commit the recipients' rows have moved on.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.journey import wakeups
from services.journey.broadcasts import entries, sender
from services.journey.broadcasts import store as bstore
from services.journey.domain.broadcast import BroadcastDocument, advanced, allowed
from services.journey.handlers import apply_signals
from services.journey.policy.directory import Directory
from services.journey.polling import PollingWorker
from services.journey.publisher import OutboxPublisher
from services.journey.store import Documents
from services.journey.tables import broadcasts, outbox, policies
from shared.clock import Clock
from shared.db.outbox import OutboxRow
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)
UNTHROTTLED = 1000.0  # per second, per broadcast, when neither limit is set
MAX_PER_TICK = 2000  # recipients per broadcast per transaction


class BroadcastWorker(PollingWorker):
    alarms, name = wakeups.BROADCASTS, "broadcast worker"

    def __init__(self, rt: ServiceRuntime, clock: Clock, docs: Documents, directory: Directory,
                 publisher: OutboxPublisher | None = None, *, tick_s: float = 0.1,
                 max_idle_s: float = 1.0) -> None:
        self.rt, self.clock, self.directory, self.publisher = rt, clock, directory, publisher
        self.docs = docs
        self.tick_s, self.max_idle_s = tick_s, max_idle_s
        super().__init__()

    async def step(self) -> float | None:
        return await self.tick()

    async def tick(self) -> float:
        """Start due broadcasts and pace the sending ones; returns how long to sleep."""
        await self.start_due()
        b = broadcasts.c
        async with self.rt.engine.connect() as conn:
            rows = (await conn.execute(select(b.workspace_id, b.key).where(
                b.status == "sending").order_by(b.updated_at).limit(100))).all()
            if not rows:
                start = (await conn.execute(select(func.min(b.start_at)).where(
                    b.status == "scheduled"))).scalar()
                until = (start - self.clock.now()).total_seconds() if start else math.inf
                return min(max(until, self.tick_s), self.max_idle_s)
        for ws in sorted({r.workspace_id for r in rows}):
            await self.pace_workspace(ws, [r.key for r in rows if r.workspace_id == ws])
        return self.tick_s

    async def start_due(self) -> None:
        """Scheduled broadcasts whose moment came: freeze the audience, start sending."""
        now = self.clock.now()
        b = broadcasts.c
        async with self.rt.engine.begin() as conn:
            rows = (await conn.execute(select(broadcasts).where(
                b.status == "scheduled", b.start_at <= now).limit(5)
                .with_for_update(skip_locked=True))).mappings().all()
            for row in rows:
                doc = BroadcastDocument.model_validate(row["document"])
                tz = await self.directory.timezone(row["workspace_id"])
                await sender.freeze(conn, row["workspace_id"], row["key"], doc, now, tz)
                await bstore.set_status(conn, row["workspace_id"], row["key"],
                                        status="sending", started_at=row["started_at"] or now)

    async def pace_workspace(self, workspace_id: str, keys: list[str]) -> None:
        now = self.clock.now()
        p, b = policies.c, broadcasts.c
        async with self.rt.engine.begin() as conn:
            policy_row = (await conn.execute(select(p.document, p.tick_at).where(
                p.workspace_id == workspace_id).with_for_update(skip_locked=True))).first()
            exists = (await conn.execute(select(p.workspace_id).where(
                p.workspace_id == workspace_id))).first()
            if policy_row is None and exists is not None:
                return  # another replica paces this workspace now
            ws_rate = policy_row.document.get("max_per_second") if policy_row else None
            ws_tick = policy_row.tick_at if policy_row else None
            budget = allowed(ws_tick, now, ws_rate) if ws_rate else None
            used_total, published = 0, []
            rows = (await conn.execute(select(broadcasts).where(
                b.workspace_id == workspace_id, b.key.in_(keys), b.status == "sending")
                .with_for_update(skip_locked=True))).mappings().all()
            for row in rows:
                entry = row["document"].get("entry")
                doc = None if entry else BroadcastDocument.model_validate(row["document"])
                rate = float((doc and doc.throttle_per_second) or ws_rate or UNTHROTTLED)
                limit = allowed(row["tick_at"], now, rate)
                limit = min(limit, MAX_PER_TICK)
                if budget is not None:
                    limit = min(limit, budget - used_total)
                if limit <= 0:
                    continue
                if doc is None:
                    used, ids = await self._enter_due(conn, workspace_id, row["key"], entry,
                                                      now, limit)
                else:
                    used, ids = await sender.send_due(
                        conn, self.rt.settings, outbox, workspace_id, row["key"], doc, now,
                        limit, await self.directory.timezone(workspace_id))
                used_total += used
                published += ids
                values: dict[str, datetime | str | None] = {}
                if used:
                    values["tick_at"] = advanced(row["tick_at"], now, rate, used)
                elif not await bstore.pending_left(conn, workspace_id, row["key"]):
                    values.update(status="sent", finished_at=now)
                if values:
                    await bstore.set_status(conn, workspace_id, row["key"], **values)
            if ws_rate and used_total:
                await conn.execute(update(policies).where(p.workspace_id == workspace_id)
                                   .values(tick_at=advanced(ws_tick, now, ws_rate, used_total)))
        if self.publisher is not None:
            self.publisher.publish_soon(published)

    async def _enter_due(self, conn: AsyncConnection, workspace_id: str, key: str,
                         entry: dict[str, Any], now: datetime, limit: int
                         ) -> tuple[int, list[OutboxRow]]:
        """`include_existing`: enter up to `limit` queued members into their journey (in a
        transaction of the engine's own; the inbox makes each entry happen once)."""
        claimed = [pid for pid, _ in await bstore.claim_due(conn, workspace_id, key, now,
                                                            limit)]
        if not claimed:
            return 0, []
        snaps = await bstore.snapshots_of(conn, workspace_id, claimed)
        signals = entries.signals_for(workspace_id, entry["journey"], entry["segments"], snaps,
                                      claimed, now)
        if signals:
            await apply_signals(self.rt, self.clock, self.docs, self.publisher,
                                entries.CONSUMER, [s.id for s in signals], signals)
        entered = {s.profile_id for s in signals}
        await bstore.settle(conn, workspace_id, key, [
            (pid, "sent" if pid in entered else "suppressed", now, None,
             None if pid in entered else "left_audience") for pid in claimed])
        return len(claimed), []
