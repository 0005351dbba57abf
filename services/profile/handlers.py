"""Profile's message handlers: events in, profile-events and profile-changes out."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.dialects.postgresql import insert

from services.profile import store
from services.profile.domain.identity import identifiers, trait_updates
from services.profile.tables import events as events_table
from services.profile.tables import inbox, outbox
from shared.contracts.delivery import DeliveryEvent
from shared.contracts.envelope import message_key
from shared.contracts.events import Event
from shared.contracts.profile import ChangeKind, ProfileChange, ProfileEvent
from shared.db import add_to_outbox, claim_new
from shared.kafka import Record
from shared.runtime import ServiceRuntime


async def handle_events(rt: ServiceRuntime, records: list[Record]) -> None:
    """Resolve each event to a profile, apply it, and re-publish it with the profile."""
    settings = rt.settings
    async with rt.engine.begin() as conn:
        fresh = await claim_new(conn, inbox, "profile.events",
                                [r.value.dedupe_id() for r in records])
        profile_events = []
        changes = []
        for record in records:
            event: Event = record.value
            if event.dedupe_id() not in fresh:
                continue
            row, merged = await store.resolve(conn, event.workspace_id, identifiers(event),
                                              event.timestamp)
            row = await store.record_event(conn, row, event, trait_updates(event))
            key = message_key(event.workspace_id, row["id"])
            profile_events.append((key, ProfileEvent(
                id=event.id, workspace_id=event.workspace_id, profile_id=row["id"],
                event=event, profile=store.snapshot(row))))
            if merged:
                changes.append((key, ProfileChange(
                    id=f"merge:{event.id}", workspace_id=event.workspace_id,
                    profile_id=row["id"], kind=ChangeKind.merged, data={"merged_ids": merged},
                    occurred_at=datetime.now(UTC))))
        ids = await add_to_outbox(conn, outbox, settings.topic("profile-events"),
                                  "profile-events", profile_events)
        ids += await add_to_outbox(conn, outbox, settings.topic("profile-changes"),
                                   "profile-changes", changes)
    assert rt.relay is not None
    await rt.relay.publish(ids)


async def handle_delivery_events(rt: ServiceRuntime, records: list[Record]) -> None:
    """Keep delivery outcomes in the profile's history (engagement comes from these)."""
    async with rt.engine.begin() as conn:
        fresh = await claim_new(conn, inbox, "profile.delivery-events",
                                [r.value.dedupe_id() for r in records])
        rows = [
            {"workspace_id": d.workspace_id, "event_id": f"delivery:{d.id}",
             "profile_id": d.profile_id, "type": "delivery",
             "name": f"Message {d.status.value}",
             "properties": {"message_id": d.message_id, "channel": d.channel.value,
                            "template": d.template, "status": d.status.value},
             "timestamp": d.occurred_at, "received_at": datetime.now(UTC)}
            for d in (r.value for r in records)
            if isinstance(d, DeliveryEvent) and d.dedupe_id() in fresh
        ]
        if rows:
            await conn.execute(insert(events_table).values(rows).on_conflict_do_nothing())
