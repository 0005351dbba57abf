"""Provider calls with retries and rate limits, and what their failures become.

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
from datetime import UTC, datetime, timedelta

from services.messaging.domain.pacing import backoff_delay, retry_delay
from services.messaging.message import Outcome, Prepared
from services.messaging.metrics import PROVIDER_SECONDS
from services.messaging.parts import Messaging
from services.messaging.providers.base import (
    InvalidAddress,
    Outbound,
    OutcomeUnknown,
    PermanentFailure,
    ProviderError,
    TransientFailure,
)
from services.messaging.providers.routing import Route
from shared import tracing
from shared.kafka.errors import is_transient
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)


IN_PROCESS_WAIT_CAP = 10.0  # a longer Retry-After defers the message durably at once


async def pace(rt: ServiceRuntime, m: Messaging, p: Prepared) -> float | None:
    """Take a token of the rate limit of the message's first address, before it is marked
    `sending` (a wait for a token is not a provider call in flight). Returns the seconds to
    wait before sending, or None when no token was taken (no limit): `send` then takes
    none for that first attempt when one was."""
    if not p.outbound:
        return None
    first = p.outbound[0]
    try:
        route = await m.routes.route(rt.engine, first.workspace_id, p.cmd.channel.value,
                                     first.to)
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
        return await m.routes.route(rt.engine, first.workspace_id, p.cmd.channel.value,
                                    first.to)
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
            route = await m.routes.route(rt.engine, outbound.workspace_id, p.cmd.channel.value,
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
