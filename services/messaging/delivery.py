"""Provider calls with retries and rate limits, and the outcomes recorded in one batch."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from services.messaging import store
from services.messaging.bootstrap import Messaging, Route
from services.messaging.domain.pacing import backoff_delay
from services.messaging.metrics import PROVIDER_SECONDS, SENDS
from services.messaging.prepare import Prepared, event, send_event
from services.messaging.providers.base import (
    InvalidAddress,
    Outbound,
    PermanentFailure,
    ProviderError,
    TransientFailure,
)
from services.messaging.tables import messages
from shared import tracing
from shared.contracts.delivery import DeliveryEvent, DeliveryStatus
from shared.db.outbox import OutboxRow
from shared.kafka.errors import is_transient
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    prepared: Prepared
    status: str  # sent | bounced | failed | suppressed
    reason: str | None = None
    provider: str | None = None
    provider_id: str | None = None
    dead: list[tuple[str, str]] = field(default_factory=list)  # (address, why)


def verdict_outcome(p: Prepared) -> Outcome:
    assert p.verdict is not None
    return Outcome(p, p.verdict[0], p.verdict[1])


async def send(rt: ServiceRuntime, m: Messaging, p: Prepared) -> Outcome:
    """Every live address of the message through its provider. Never raises for a provider
    failure: that becomes the outcome."""
    sent: list[tuple[str, str | None]] = []
    dead: list[tuple[str, str]] = []
    failure: str | None = None
    for outbound in p.outbound:
        try:
            route = await m.route(rt.engine, outbound.workspace_id, p.cmd.channel.value,
                                  outbound.to)
            sent.append((route.name, await _send_with_retries(m, route, outbound)))
        except InvalidAddress as exc:
            dead.append((outbound.to, str(exc)))
        except ProviderError as exc:
            failure = str(exc)
        except Exception as exc:
            if is_transient(exc):  # our own database, while looking up the channel
                failure = "channel configuration unavailable (database unreachable)"
                continue
            # A provider bug must not become a crash loop: record it.
            log.exception("provider raised unexpectedly for message %s", p.message_id)
            failure = f"provider error: {type(exc).__name__}"
    if sent:
        return Outcome(p, "sent", provider=sent[0][0], provider_id=sent[0][1], dead=dead)
    if dead and failure is None:
        return Outcome(p, "bounced", reason=dead[0][1], dead=dead)
    return Outcome(p, "failed", reason=failure or "not sent", dead=dead)


async def _send_with_retries(m: Messaging, route: Route, outbound: Outbound) -> str | None:
    attempts = m.settings.messaging_provider_attempts
    for attempt in range(1, attempts + 1):
        if route.limiter is not None and (wait := route.limiter.reserve()) > 0:
            await asyncio.sleep(wait)
        started, result = time.perf_counter(), "error"
        try:
            with tracing.span("provider send", "messaging", kind="client",
                              attributes={"touchpoint.provider": route.name,
                                          "touchpoint.attempt": attempt}):
                provider_id = await route.provider.send(outbound)
            result = "ok"
            return provider_id
        except TransientFailure as exc:
            result = "transient"
            if attempt == attempts:
                raise PermanentFailure(f"gave up after {attempts} attempts: {exc}") from exc
            await asyncio.sleep(backoff_delay(attempt, base=m.settings.messaging_retry_base_seconds,
                                              retry_after=exc.retry_after))
        except PermanentFailure:
            result = "permanent"
            raise
        finally:
            PROVIDER_SECONDS.labels(route.name, result).observe(time.perf_counter() - started)
    raise AssertionError("unreachable")


def _events(o: Outcome, now: datetime) -> list[DeliveryEvent | store.Encoded]:
    p = o.prepared
    many = len(p.outbound) > 1
    # Bounces through the model, which bounds the address's length; the rest built directly.
    events: list[DeliveryEvent | store.Encoded] = [
        event(p.cmd, p.message_id, DeliveryStatus.bounced, now, reason=why, address=addr,
              suffix=f":{store.address_hash('', addr)[:12]}" if many else "")
        for addr, why in o.dead]
    if o.status in ("failed", "suppressed"):
        events.append(send_event(p.cmd, p.message_id, DeliveryStatus.failed, now,
                                 reason=o.reason, **p.event_fields()))
    elif o.status == "sent":
        events.append(send_event(p.cmd, p.message_id, DeliveryStatus.sent, now,
                                 codes=p.codes or None, **p.event_fields()))
    return events


# One statement for the whole wave, on asyncpg directly (see `store.transaction`).
_RECORD = (f"UPDATE {messages.fullname} AS m SET status = o.status, error = o.error, "
           "updated_at = now(), attempts = m.attempts + 1, provider = o.provider, "
           "provider_message_id = o.provider_id, sent_at = o.sent_at, content = o.content, "
           "subject = o.subject, body = o.body "
           "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], "
           "$6::timestamptz[], $7::jsonb[], $8::text[], $9::text[]) "
           "AS o(id, status, error, provider, provider_id, sent_at, content, subject, body) "
           "WHERE m.id = o.id")


async def record(rt: ServiceRuntime, outcomes: list[Outcome]) -> list[OutboxRow]:
    """Outcomes, their delivery events and undeliverable addresses in one transaction.
    A database outage here is waited out: the messages went out, so their record must not
    be lost. Returns the outbox row ids."""
    if not outcomes:
        return []
    now = datetime.now(UTC)
    columns: list[list[Any]] = [[] for _ in range(9)]
    for o in outcomes:
        content = o.prepared.content if o.status in ("sent", "bounced") else None
        row = (o.prepared.message_id, o.status, o.reason, o.provider, o.provider_id,
               now if o.status == "sent" else None,
               orjson.dumps(content).decode() if content else None,
               content["subject"] if content else None,
               (content.get("text") or content.get("body") or content["html"])
               if content else None)
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    events = [e for o in outcomes for e in _events(o, now)]
    delay = 0.2
    while True:
        try:
            async with store.transaction(rt.engine) as db:
                await db.execute(_RECORD, *columns)
                for o in outcomes:
                    if o.dead:
                        cmd = o.prepared.cmd
                        await store.mark_undeliverable(
                            db, workspace_id=cmd.workspace_id, channel=cmd.channel.value,
                            addresses=[a for a, _ in o.dead], reason=o.dead[0][1])
                rows = await store.emit(db, rt.settings, events)
            for o in outcomes:  # committed: counted once (a retried wave is a no-op then)
                SENDS.labels(o.prepared.cmd.channel.value, o.status).inc()
            return rows
        except Exception as exc:
            if not is_transient(exc) or delay > 30:
                raise
            log.warning("recording message outcomes: database unavailable, retrying")
            await asyncio.sleep(delay)
            delay *= 2
