"""Accept validated events: dedupe on `messageId`, publish with acks=all, confirm.

A 200 means every event of the request is on the broker, sent now or by an earlier
request with the same `messageId`. When the broker does not acknowledge in time the
answer is 503, and the events whose fate is still open stay claimed ("in flight") until
the producer settles them: those it delivered are confirmed (a retry finds them
duplicates), the rest are released (a retry publishes them). So a retry never makes a
second copy, and never skips an event that did not make it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiokafka.errors import KafkaError

from services.ingest import metrics
from services.ingest.dedupe import Claim, Deduper
from services.ingest.publisher import Outgoing, Sending, enqueue
from shared.http.problems import Problem
from shared.kafka.errors import is_transient
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)

# A request is answered within 2 s when the broker is away (a 503; SDKs retry): the dedupe
# claim and the publish share ANSWER_WITHIN_S, the publish gets at least PUBLISH_MIN_S.
ANSWER_WITHIN_S = 1.0  # a second of slack for a loaded machine
PUBLISH_MIN_S = 0.3
# The producer fails a batch it could not deliver after its request timeout (10 s);
# wait a bit longer than that before giving up on a future (the lease is longer still).
SETTLE_TIMEOUT_S = 25.0
RETRY_AFTER = {"Retry-After": "2"}


@dataclass(frozen=True)
class Accepted:
    published: int
    duplicates: int


class Acceptor:
    def __init__(self, runtime: ServiceRuntime, deduper: Deduper) -> None:
        self.runtime, self.deduper = runtime, deduper
        self.topic = runtime.settings.topic("events")
        self._settling: set[asyncio.Task[None]] = set()

    async def accept(self, workspace_id: str, events: list[Outgoing]) -> Accepted:
        """Publish the events not accepted before; Problem(503) when a dependency is away."""
        try:
            return await self._accept(workspace_id, events)
        except Problem:
            metrics.UNAVAILABLE.inc(len(events))
            raise

    async def _accept(self, workspace_id: str, events: list[Outgoing]) -> Accepted:
        if not self.runtime.producer_started:
            raise Problem(503, "Service unavailable", "the event broker is not reachable yet",
                          headers=RETRY_AFTER)
        deadline = asyncio.get_running_loop().time() + ANSWER_WITHIN_S
        unique: dict[str, Outgoing] = {}
        for event in events:
            unique.setdefault(event.id, event)  # a messageId repeated in one request counts once
        try:
            claim = await self.deduper.claim(workspace_id, list(unique))
        except Exception as exc:
            if is_transient(exc):
                raise Problem(503, "Service unavailable", "the dedupe store is not reachable",
                              headers=RETRY_AFTER) from exc
            raise
        if claim.mine:
            sending = Sending()
            left = max(PUBLISH_MIN_S, deadline - asyncio.get_running_loop().time())
            error = await self._publish([unique[m] for m in claim.mine], sending, left)
            if error is not None:
                self._settle_later(workspace_id, claim, sending)
                # Any broker-side failure is the broker's, never the client's: 503, retry.
                if is_transient(error) or isinstance(error, KafkaError):
                    raise Problem(503, "Service unavailable",
                                  "the event broker did not acknowledge in time",
                                  headers=RETRY_AFTER) from error
                raise error
            self.deduper.confirm(claim)
        if claim.in_flight:
            # Another request holds these ids and its outcome is still open: if it fails
            # they must be sent again, so no 200 for them yet. The retry will know.
            raise Problem(503, "Concurrent retry",
                          f"{len(claim.in_flight)} event(s) with the same messageId are being "
                          "accepted by another request; retry", headers=RETRY_AFTER)
        metrics.PUBLISHED.inc(len(claim.mine))
        metrics.DUPLICATE.inc(len(events) - len(claim.mine))
        return Accepted(published=len(claim.mine), duplicates=len(events) - len(claim.mine))

    async def _publish(self, events: list[Outgoing], sending: Sending,
                       timeout: float) -> BaseException | None:
        """None when the broker acked every event within `timeout` seconds, else the error."""
        try:
            # send() itself can wait for metadata or buffer space when the broker is away.
            # On timeout the delivery futures are left alone: _settle reads their outcome.
            async with asyncio.timeout(timeout):
                await enqueue(self.runtime.producer, self.topic, events, sending)
                await asyncio.wait(sending.futures)
        except TimeoutError:
            return TimeoutError("broker did not acknowledge within the publish timeout")
        except Exception as exc:
            return exc
        for future in sending.futures:
            if (error := future.exception()) is not None:
                return error
        return None

    def _settle_later(self, workspace_id: str, claim: Claim, sending: Sending) -> None:
        task = asyncio.create_task(self._settle(workspace_id, claim, sending))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, workspace_id: str, claim: Claim, sending: Sending) -> None:
        """Once the producer decided each event's fate: confirm what it delivered,
        release the rest for the client's retry."""
        if sending.parts:
            await asyncio.wait(sending.futures, timeout=SETTLE_TIMEOUT_S)
        delivered = sending.delivered()
        undelivered = [m for m in claim.mine if m not in delivered]
        await self.deduper.release(workspace_id, claim, undelivered)
        if delivered:
            self.deduper.confirm(claim)
        log.info("settled a failed publish: %d delivered, %d released", len(delivered),
                 len(undelivered))

    async def close(self, timeout: float = 1.0) -> None:
        """Let open outcomes settle a little; what is left is freed by the claim lease."""
        if self._settling:
            _done, pending = await asyncio.wait(set(self._settling), timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
