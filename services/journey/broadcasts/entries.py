"""`include_existing`: a published journey's `segment_entered` entry point reaches the
segment's current members once, throttled like a broadcast.

Publishing freezes the members into an audience (a broadcast row keyed `~<journey>`, never
listed); the broadcast worker then enters them at the pace of the policy's
`max_per_second` as `segment_entered` signals meant for that journey alone, through the
same engine path as the consumers. Each signal's id is fixed per (journey, customer), so
the inbox lets it enter once however often it is retried or the journey republished.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.journey.broadcasts import store as bstore
from services.journey.domain.document import JourneyDocument
from services.journey.domain.signals import Signal
from services.journey.tables import broadcasts
from shared.db.driver import driver

PREFIX = "~"
CONSUMER = "journey.include-existing"


def backfill_key(journey_key: str) -> str:
    return f"{PREFIX}{journey_key}"


async def schedule(conn: AsyncConnection, workspace_id: str, journey_key: str,
                   document: dict[str, Any], now: datetime) -> int:
    """At publish: freeze the current members of each `include_existing` segment; returns
    how many are queued to enter (members already queued before are not queued again)."""
    doc = JourneyDocument.model_validate(document)
    segments = [s.enter.segment_entered for s in doc.entry_points()
                if s.enter.include_existing and s.enter.segment_entered]
    if not segments:
        return 0
    key = backfill_key(journey_key)
    rows = await (await driver(conn)).fetch(
        f"SELECT DISTINCT profile_id FROM {bstore._SNAPSHOTS} WHERE workspace_id = $1 "
        "AND segments && $2::text[]", workspace_id, segments)
    entry = {"entry": {"journey": journey_key, "segments": segments}}
    await conn.execute(insert(broadcasts).values(
        workspace_id=workspace_id, key=key, document=entry, status="sending",
        started_at=now).on_conflict_do_update(
        index_elements=[broadcasts.c.workspace_id, broadcasts.c.key],
        set_={"document": entry, "status": "sending", "finished_at": None}))
    await bstore.freeze(conn, workspace_id, key, [(r[0], now) for r in rows])
    return len(rows)


def signals_for(workspace_id: str, journey_key: str, segments: list[str],
                snaps: dict[str, tuple[dict[str, Any], bool]], profile_ids: list[str],
                now: datetime) -> list[Signal]:
    """One `segment_entered` signal per member still in a segment, for this journey only."""
    out = []
    for pid in profile_ids:
        snap = snaps.get(pid, ({}, False))[0]
        segment = next((s for s in segments if s in (snap.get("segments") or [])), None)
        if segment is None:
            continue  # left the segment before their turn
        out.append(Signal(
            id=f"include-existing:{journey_key}:{pid}", workspace_id=workspace_id,
            profile_id=pid, kind="change", name="segment_entered", at=now,
            data={"profile": snap, "only_journey": journey_key,
                  "change": {"kind": "segment_entered", "data": {"segment": segment}}}))
    return out
