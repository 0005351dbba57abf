"""Profile's message handlers: events and delivery outcomes in, profile-events/changes out."""

from __future__ import annotations

from services.profile.batch_reads import claim_and_read
from services.profile.pipeline import apply_batch
from services.profile.tables import inbox
from shared.clock import Clock, SystemClock
from shared.kafka import Record
from shared.runtime import ServiceRuntime


async def handle_events(rt: ServiceRuntime, records: list[Record],
                        clock: Clock | None = None) -> None:
    """Resolve each event to a profile, apply it, and re-publish it with the profile."""
    await _handle(rt, "profile.events", records, clock or SystemClock())


async def handle_delivery_events(rt: ServiceRuntime, records: list[Record],
                                 clock: Clock | None = None) -> None:
    """Delivery outcomes become engagement, consent and address validity, and profile events."""
    await _handle(rt, "profile.delivery-events", records, clock or SystemClock())


async def _handle(rt: ServiceRuntime, consumer: str, records: list[Record], clock: Clock) -> None:
    async with rt.engine.begin() as conn:
        # The inbox claim, and the conventions and segment rules the batch needs: one round trip.
        fresh, reads = await claim_and_read(conn, inbox, consumer,
                                            [r.value.dedupe_id() for r in records],
                                            {r.value.workspace_id for r in records})
        # A message id twice in one poll is claimed once: apply its first copy only.
        items = []
        for record in records:
            if (key := record.value.dedupe_id()) in fresh:
                fresh.discard(key)
                items.append(record.value)
        ids = await apply_batch(conn, items, rt.settings, clock.now(), reads)
    await rt.publish(ids)
