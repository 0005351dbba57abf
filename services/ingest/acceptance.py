"""Accept validated events: dedupe on `messageId`, publish with acks=all, confirm.

A 200 means every event of the request is on the broker, now or by an earlier request.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from services.ingest.dedupe import Deduper
from services.ingest.publisher import publish_events
from shared.contracts.events import Event
from shared.http.problems import Problem
from shared.kafka.errors import is_transient

PUBLISH_TIMEOUT_S = 2.0  # answer 503 fast when the broker is away; SDKs retry
RETRY_AFTER = {"Retry-After": "2"}


@dataclass(frozen=True)
class Accepted:
    published: int
    duplicates: int


async def accept(*, deduper: Deduper, producer: AIOKafkaProducer, producer_started: bool,
                 topic: str, workspace_id: str, events: list[Event]) -> Accepted:
    """Publish the events not accepted before; raise Problem(503) when a dependency is away."""
    if not producer_started:
        raise Problem(503, "Service unavailable", "the event broker is not reachable yet",
                      headers=RETRY_AFTER)
    unique: dict[str, Event] = {}
    for event in events:
        unique.setdefault(event.id, event)  # a messageId repeated inside one request counts once
    try:
        claim = await deduper.claim(workspace_id, list(unique))
    except Exception as exc:
        if is_transient(exc):
            raise Problem(503, "Service unavailable", "the dedupe store is not reachable",
                          headers=RETRY_AFTER) from exc
        raise
    fresh = [unique[message_id] for message_id in claim.mine]
    if fresh:
        try:
            await publish_events(producer, topic, fresh, timeout=PUBLISH_TIMEOUT_S)
        except Exception as exc:
            await deduper.release(workspace_id, claim)
            if is_transient(exc):
                raise Problem(503, "Service unavailable", "the event broker did not acknowledge",
                              headers=RETRY_AFTER) from exc
            raise
        deduper.confirm(claim)
    if claim.in_flight:
        # Another request holds these ids and has not been acked yet: if it fails, they
        # must be sent again, so do not say 200 for them. The retry will find them done.
        raise Problem(503, "Concurrent retry",
                      f"{len(claim.in_flight)} event(s) with the same messageId are being "
                      "accepted by another request; retry", headers={"Retry-After": "1"})
    return Accepted(published=len(fresh), duplicates=len(events) - len(fresh))
