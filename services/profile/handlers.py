"""Profile's message handlers: events and delivery outcomes in, profile-events/changes out.

One transaction per poll: a poll holding both topics' records goes to `handle_poll` (the
consumer loop's joint handler), which claims both in one statement and applies them in
one batch, with one outbox publish after commit; a poll of one topic is the same code
with one topic.
"""

from __future__ import annotations

from services.profile.batch_reads import claim_and_read
from services.profile.pipeline import apply_batch
from services.profile.tables import inbox
from shared.clock import Clock, SystemClock
from shared.kafka import Record
from shared.runtime import ServiceRuntime

EVENTS, DELIVERY = "profile.events", "profile.delivery-events"


async def handle_events(rt: ServiceRuntime, records: list[Record],
                        clock: Clock | None = None) -> None:
    """Resolve each event to a profile, apply it, and re-publish it with the profile."""
    await handle_poll(rt, {EVENTS: records}, clock)


async def handle_delivery_events(rt: ServiceRuntime, records: list[Record],
                                 clock: Clock | None = None) -> None:
    """Delivery outcomes become engagement, consent and address validity, and profile events."""
    await handle_poll(rt, {DELIVERY: records}, clock)


async def handle_poll(rt: ServiceRuntime, polled: dict[str, list[Record]],
                      clock: Clock | None = None) -> None:
    """A poll's records by consumer name (events first, then delivery outcomes, each topic's
    in the loop's order), in one transaction: what handling each topic's records in turn
    would do, for one claim, one commit and one outbox publish."""
    async with rt.engine.begin() as conn:
        # The inbox claim, and the conventions and segment rules the batch needs: one round trip.
        fresh, reads = await claim_and_read(
            conn, inbox, {consumer: [r.value.dedupe_id() for r in records]
                          for consumer, records in polled.items()},
            {r.value.workspace_id for records in polled.values() for r in records})
        # A message id twice in one poll is claimed once: apply its first copy only.
        items = []
        for consumer in sorted(polled, key=lambda c: _ORDER[c]):
            mine = fresh[consumer]
            for record in polled[consumer]:
                if (key := record.value.dedupe_id()) in mine:
                    mine.discard(key)
                    items.append(record.value)
        ids = await apply_batch(conn, items, rt.settings, (clock or SystemClock()).now(), reads)
    await rt.publish(ids)


_ORDER = {EVENTS: 0, DELIVERY: 1}
