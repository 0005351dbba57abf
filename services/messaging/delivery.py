"""Provider calls with retries and rate limits, and the outcomes recorded in one batch.

What a provider failure becomes (see providers/base.py for who raises what):
- TransientFailure: retried in process (`messaging_provider_attempts`, short backoff), then
  `retrying` with a durable `retry_at` (exponential, Retry-After honoured) that the retry
  sweeper picks up, across restarts, until `messaging_retry_for` after the first failure
  or the command's `expires_at` (then `failed`, or `expired` when `expires_at` bound it);
- OutcomeUnknown: `unknown` (the provider may have it), resendable by an operator;
- InvalidAddress: the address is marked undeliverable and reported `bounced` (with the
  address, so profile suppresses it or removes the push token);
- other PermanentFailure: `failed` at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from services.messaging import store
from services.messaging.bootstrap import Messaging, Route
from services.messaging.domain.pacing import backoff_delay, retry_delay
from services.messaging.metrics import PROVIDER_SECONDS
from services.messaging.prepare import Prepared, event, send_event
from services.messaging.providers.base import (
    InvalidAddress,
    Outbound,
    OutcomeUnknown,
    PermanentFailure,
    ProviderError,
    TransientFailure,
)
from services.messaging.tables import messages
from shared import tracing
from shared.contracts.delivery import DeliveryEvent, DeliveryStatus
from shared.db.outbox import Pending
from shared.kafka.errors import is_transient
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)


IN_PROCESS_WAIT_CAP = 10.0  # a longer Retry-After defers the message durably at once
KEEP_COMMAND = frozenset({"retrying", "failed", "unknown"})  # may still be (re)sent


@dataclass
class Outcome:
    prepared: Prepared
    status: str  # sent | bounced | failed | suppressed | unknown | retrying | expired
    reason: str | None = None
    provider: str | None = None
    provider_id: str | None = None
    dead: list[tuple[str, str]] = field(default_factory=list)  # (address, why)
    retry_at: datetime | None = None  # retrying: when
    retry_since: datetime | None = None  # retrying: the first transient failure


def verdict_outcome(p: Prepared) -> Outcome:
    assert p.verdict is not None
    return Outcome(p, p.verdict[0], p.verdict[1])


async def pace(rt: ServiceRuntime, m: Messaging, p: Prepared) -> float | None:
    """Take a token of the rate limit of the message's first address, before it is marked
    `sending` (a wait for a token is not a provider call in flight). Returns the seconds to
    wait before sending, or None when no token was taken (no limit): `send` then takes
    none for that first attempt when one was."""
    if not p.outbound:
        return None
    first = p.outbound[0]
    try:
        route = await m.route(rt.engine, first.workspace_id, p.cmd.channel.value, first.to)
        return None if route.limiter is None else await route.limiter.reserve()
    except Exception:  # whatever it is, `send` meets it again and makes it the outcome
        return None


async def route_of(rt: ServiceRuntime, m: Messaging, p: Prepared) -> Route | None:
    """The route of the message's first address, whose slots it takes (None: no route;
    `send` meets the reason again, without a provider call, and makes it the outcome)."""
    if not p.outbound:
        return None
    first = p.outbound[0]
    try:
        return await m.route(rt.engine, first.workspace_id, p.cmd.channel.value, first.to)
    except Exception:
        return None


async def send(rt: ServiceRuntime, m: Messaging, p: Prepared, *, attempts: int,
               paced: bool = False) -> Outcome:
    """Every live address of the message through its provider. Never raises for a provider
    failure: that becomes the outcome. `paced`: the first address's first token is taken."""
    sent: list[tuple[str, str | None]] = []
    dead: list[tuple[str, str]] = []
    failure: str | None = None
    unknown: str | None = None
    transient: TransientFailure | None = None
    for n, outbound in enumerate(p.outbound):
        try:
            route = await m.route(rt.engine, outbound.workspace_id, p.cmd.channel.value,
                                  outbound.to)
            sent.append((route.name, await _send_with_retries(
                m, route, outbound, attempts, paced=paced and n == 0)))
        except InvalidAddress as exc:
            dead.append((outbound.to, str(exc)))
        except OutcomeUnknown as exc:
            unknown = str(exc)
        except TransientFailure as exc:
            transient = exc
        except ProviderError as exc:
            failure = str(exc)
        except Exception as exc:
            if is_transient(exc):  # our own database, while looking up the channel
                transient = TransientFailure("channel configuration unavailable "
                                             "(database unreachable)")
                continue
            # A provider bug must not become a crash loop: record it.
            log.exception("provider raised unexpectedly for message %s", p.message_id)
            failure = f"provider error: {type(exc).__name__}"
    if sent:
        return Outcome(p, "sent", provider=sent[0][0], provider_id=sent[0][1], dead=dead)
    if unknown is not None:
        return Outcome(p, "unknown", reason=unknown[:1000], dead=dead)
    if transient is not None and failure is None:
        return deferred(m, p, str(transient), transient.retry_after, dead)
    if dead and failure is None:
        return Outcome(p, "bounced", reason=dead[0][1], dead=dead)
    return Outcome(p, "failed", reason=failure or "not sent", dead=dead)


def deferred(m: Messaging, p: Prepared, reason: str, retry_after: float | None,
             dead: list[tuple[str, str]] | None = None) -> Outcome:
    """A transient failure: `retrying` at the next durable retry time, or given up when that
    is past the retry window or the command's `expires_at`."""
    s = m.settings
    now = datetime.now(UTC)
    since = p.retry_since or now
    tries = p.tries + 1
    at = now + timedelta(seconds=retry_delay(tries, base=s.messaging_retry_delay_seconds,
                                             cap=s.messaging_retry_max_delay_seconds,
                                             retry_after=retry_after))
    expires = p.cmd.expires_at
    if expires is not None and at > expires:
        return Outcome(p, "expired", reason=f"expired while retrying: {reason}"[:1000],
                       dead=dead or [])
    if at > since + s.messaging_retry_for:
        return Outcome(p, "failed", reason=f"gave up after {tries} round(s) of retries over "
                       f"{s.messaging_retry_for}: {reason}"[:1000], dead=dead or [])
    return Outcome(p, "retrying", reason=reason[:1000], dead=dead or [], retry_at=at,
                   retry_since=since)


async def _send_with_retries(m: Messaging, route: Route, outbound: Outbound,
                             attempts: int, *, paced: bool = False) -> str | None:
    for attempt in range(1, attempts + 1):
        if paced and attempt == 1:
            pass  # the token was taken before the message was marked `sending`
        elif route.limiter is not None and (wait := await route.limiter.reserve()) > 0:
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
            if attempt == attempts or (exc.retry_after or 0) > IN_PROCESS_WAIT_CAP:
                raise  # deferred to a durable retry
            await asyncio.sleep(backoff_delay(attempt, base=m.settings.messaging_retry_base_seconds,
                                              cap=IN_PROCESS_WAIT_CAP,
                                              retry_after=exc.retry_after))
        except PermanentFailure:
            result = "permanent"
            raise
        finally:
            PROVIDER_SECONDS.labels(route.name, result).observe(time.perf_counter() - started)
    raise AssertionError("unreachable")


def _events(o: Outcome, now: datetime) -> list[DeliveryEvent | Pending]:
    p = o.prepared
    many = len(p.outbound) > 1
    # Bounces through the model, which bounds the address's length; the rest built directly.
    events: list[DeliveryEvent | Pending] = [
        event(p.cmd, p.message_id, DeliveryStatus.bounced, now, reason=why, address=addr,
              suffix=f":{store.address_hash('', addr)[:12]}" if many else "")
        for addr, why in o.dead]
    if o.status in ("failed", "suppressed"):
        events.append(send_event(p.cmd, p.message_id, DeliveryStatus.failed, now,
                                 reason=o.reason, **p.event_fields()))
    elif o.status in ("unknown", "expired"):
        events.append(send_event(p.cmd, p.message_id, DeliveryStatus(o.status), now,
                                 reason=o.reason, **p.event_fields()))
    elif o.status == "sent":
        events.append(send_event(p.cmd, p.message_id, DeliveryStatus.sent, now,
                                 codes=p.codes or None, **p.event_fields()))
    return events


# One statement for many outcomes, on asyncpg directly (see `store.transaction`).
_RECORD = (f"UPDATE {messages.fullname} AS m SET status = o.status, error = o.error, "
           "updated_at = now(), attempts = m.attempts + 1, provider = o.provider, "
           "provider_message_id = o.provider_id, sent_at = o.sent_at, content = o.content, "
           "subject = o.subject, body = o.body, retry_at = o.retry_at, "
           "retry_since = o.retry_since, command = o.command "
           "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], "
           "$6::timestamptz[], $7::jsonb[], $8::text[], $9::text[], $10::timestamptz[], "
           "$11::timestamptz[], $12::jsonb[]) "
           "AS o(id, status, error, provider, provider_id, sent_at, content, subject, body, "
           "retry_at, retry_since, command) "
           "WHERE m.id = o.id")


async def record_in(db: store.Driver, rt: ServiceRuntime,
                    outcomes: list[Outcome]) -> list[Any]:
    """Outcomes, their delivery events and undeliverable addresses, in the caller's
    transaction. Returns the outbox rows written."""
    if not outcomes:
        return []
    now = datetime.now(UTC)
    columns: list[list[Any]] = [[] for _ in range(12)]
    for o in outcomes:
        content = o.prepared.content if o.status in ("sent", "bounced") else None
        row = (o.prepared.message_id, o.status, o.reason, o.provider, o.provider_id,
               now if o.status == "sent" else None,
               orjson.dumps(content).decode() if content else None,
               content["subject"] if content else None,
               (content.get("text") or content.get("body") or content["html"])
               if content else None,
               o.retry_at, o.retry_since,
               o.prepared.cmd.model_dump_json() if o.status in KEEP_COMMAND else None)
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    events = [e for o in outcomes for e in _events(o, now)]
    await db.execute(_RECORD, *columns)
    for o in outcomes:
        if o.dead:
            cmd = o.prepared.cmd
            await store.mark_undeliverable(
                db, workspace_id=cmd.workspace_id, channel=cmd.channel.value,
                addresses=[a for a, _ in o.dead], reason=o.dead[0][1])
    return await store.emit(db, rt.settings, events)
