"""One message: send-time checks and rendering (`prepare`), then the provider call with
retries and the recorded outcome (`deliver_prepared`)."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, update

from services.messaging import store
from services.messaging.bootstrap import Messaging
from services.messaging.domain.consent import suppression_reason
from services.messaging.domain.links import track_links
from services.messaging.domain.pacing import backoff_delay
from services.messaging.domain.render import (
    Rendered,
    RenderError,
    render,
    template_data,
    with_unsubscribe_footer,
)
from services.messaging.providers.base import (
    InvalidAddress,
    Outbound,
    PermanentFailure,
    ProviderError,
    TransientFailure,
)
from services.messaging.tables import messages
from shared.contracts.delivery import DeliveryEvent, DeliveryStatus
from shared.contracts.send import SendCommand
from shared.kafka.errors import is_transient
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)


def event(cmd: SendCommand, message_id: str, status: DeliveryStatus, at: datetime, *,
          suffix: str = "", **fields: Any) -> DeliveryEvent:
    """`id` is `<message_id>:<status>[suffix]`, stable across redeliveries."""
    return DeliveryEvent(id=f"{message_id}:{status.value}{suffix}", workspace_id=cmd.workspace_id,
                         profile_id=cmd.profile_id, message_id=message_id,
                         idempotency_key=cmd.idempotency_key, status=status,
                         channel=cmd.channel, template=cmd.template, journey=cmd.journey,
                         occurred_at=at, **fields)


@dataclass
class Prepared:
    cmd: SendCommand
    message_id: str
    verdict: tuple[str, str] | None = None  # (status, reason) when it must not be sent
    outbound: list[Outbound] = field(default_factory=list)
    content: dict[str, Any] | None = None


def prepare(m: Messaging, cmd: SendCommand, message_id: str, state: store.SendState,
            addresses: list[str]) -> Prepared:
    """Consent, suppression and rendering, with the state loaded for the batch."""
    p = Prepared(cmd, message_id)
    channel, ws = cmd.channel.value, cmd.workspace_id
    tpl = state.templates.get((ws, cmd.template))
    if tpl is None and channel != "webhook":
        p.verdict = ("failed", f"template '{cmd.template}' does not exist")
        return p
    if tpl is not None and tpl["channel"] != channel:
        p.verdict = ("failed", f"template '{cmd.template}' is for {tpl['channel']}, not {channel}")
        return p
    if not addresses:
        p.verdict = ("failed", f"no {channel} address for this profile")
        return p
    live = [a for a in addresses
            if (ws, channel, store.address_hash(channel, a)) not in state.dead]
    profile = cmd.context.get("profile") or {}
    topic = tpl["topic"] if tpl is not None else None
    reason = suppression_reason(
        channel=channel, category=tpl["category"] if tpl is not None else "transactional",
        topic=topic, stored=state.consent.get((ws, cmd.profile_id), {}),
        snapshot=_bools(profile.get("consent")),
        undeliverable=not live or _bools(profile.get("reachable")).get(channel) is False)
    if reason:
        p.verdict = ("suppressed", reason)
        return p
    unsubscribe = m.unsubscribe_url(ws, cmd.profile_id, message_id, channel, topic)
    data = template_data(cmd.context, message_id=message_id, unsubscribe_url=unsubscribe)
    try:
        rendered = (render(subject=tpl["subject"], html=tpl["html"], text=tpl["text"], data=data)
                    if tpl is not None else Rendered(None, None, None))
    except RenderError as exc:
        p.verdict = ("failed", f"render: {exc}")
        return p
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if channel == "email" and tpl is not None:
        rendered = with_unsubscribe_footer(rendered, url=unsubscribe,
                                           sources=(tpl["html"], tpl["text"]))
        if rendered.html and m.settings.messaging_track_links:
            rendered = Rendered(rendered.subject, track_links(
                rendered.html, open_url=m.open_url(ws, cmd.profile_id, message_id),
                click_url=lambda u: m.click_url(ws, cmd.profile_id, message_id, u),
                keep=lambda u: u == unsubscribe), rendered.text)
        # RFC 8058 one-click unsubscribe: mailbox providers POST to this URL.
        headers = {"List-Unsubscribe": f"<{unsubscribe}>",
                   "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    elif channel == "webhook" and tpl is None:
        extra = {"type": "touchpoint.send", "message_id": message_id,
                 "workspace_id": ws, "profile_id": cmd.profile_id,
                 "journey": cmd.journey.model_dump(mode="json") if cmd.journey else None,
                 "data": {k: cmd.context.get(k) for k in ("profile", "event", "journey")}}
    p.content = {"subject": rendered.subject, "html": rendered.html, "text": rendered.text}
    if extra:
        p.content["body"] = json.dumps(extra)
    p.outbound = [Outbound(message_id=message_id, workspace_id=ws, to=a,
                           subject=rendered.subject, html=rendered.html, text=rendered.text,
                           headers=headers, data=extra) for a in live]
    return p


def _bools(value: Any) -> dict[str, bool]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, bool)}


async def deliver_prepared(rt: ServiceRuntime, m: Messaging, p: Prepared) -> list[int]:
    """Send (unless the verdict says no) and record the outcome; returns outbox row ids."""
    if p.verdict:
        status, reason = p.verdict
        return await _finish(rt, p, status, reason=reason)
    async with rt.engine.begin() as conn:
        if not await store.mark_sending(conn, p.message_id):
            return []  # another worker took it after a rebalance
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
        except Exception as exc:  # a provider bug must not become a crash loop: record it
            log.exception("provider raised unexpectedly for message %s", p.message_id)
            failure = f"provider error: {type(exc).__name__}"
    if sent:
        return await _finish(rt, p, "sent", provider=sent[0][0], provider_id=sent[0][1],
                             dead=dead)
    if dead and failure is None:
        return await _finish(rt, p, "bounced", reason=dead[0][1], dead=dead)
    return await _finish(rt, p, "failed", reason=failure or "not sent", dead=dead)


async def _send_with_retries(m: Messaging, route: Any, outbound: Outbound) -> str | None:
    attempts = m.settings.messaging_provider_attempts
    for attempt in range(1, attempts + 1):
        if route.limiter is not None and (wait := route.limiter.reserve()) > 0:
            await asyncio.sleep(wait)
        try:
            result: str | None = await route.provider.send(outbound)
            return result
        except TransientFailure as exc:
            if attempt == attempts:
                raise PermanentFailure(f"gave up after {attempts} attempts: {exc}") from exc
            await asyncio.sleep(backoff_delay(attempt, base=m.settings.messaging_retry_base_seconds,
                                              retry_after=exc.retry_after))
    raise AssertionError("unreachable")


async def _finish(rt: ServiceRuntime, p: Prepared, status: str, *, reason: str | None = None,
                  provider: str | None = None, provider_id: str | None = None,
                  dead: list[tuple[str, str]] | None = None) -> list[int]:
    """Outcome, delivery events and undeliverable addresses in one transaction. A database
    outage here is waited out: the message went out, so its record must not be lost."""
    now = datetime.now(UTC)
    cmd, ws = p.cmd, p.cmd.workspace_id
    events = [event(cmd, p.message_id, DeliveryStatus.bounced, now, reason=why, address=addr,
                    suffix="" if len(p.outbound) <= 1 else f":{store.address_hash('', addr)[:12]}")
              for addr, why in dead or []]
    if status in ("failed", "suppressed"):
        events.append(event(cmd, p.message_id, DeliveryStatus.failed, now, reason=reason))
    elif status == "sent":
        events.append(event(cmd, p.message_id, DeliveryStatus.sent, now))
    values: dict[str, Any] = {"status": status, "error": reason, "updated_at": func.now(),
                              "attempts": messages.c.attempts + 1, "provider": provider,
                              "provider_message_id": provider_id}
    if status == "sent":
        values["sent_at"] = now
    if p.content is not None and status in ("sent", "bounced"):
        values.update(content=p.content, subject=p.content["subject"],
                      body=p.content.get("text") or p.content.get("body") or p.content["html"])
    delay = 0.2
    while True:
        try:
            async with rt.engine.begin() as conn:
                await conn.execute(update(messages).where(messages.c.id == p.message_id)
                                   .values(**values))
                if dead:
                    await store.mark_undeliverable(conn, workspace_id=ws,
                                                   channel=cmd.channel.value,
                                                   addresses=[a for a, _ in dead],
                                                   reason=dead[0][1])
                return await store.emit(conn, rt.settings, events)
        except Exception as exc:
            if not is_transient(exc) or delay > 30:
                raise
            log.warning("recording message outcome: database unavailable, retrying")
            await asyncio.sleep(delay)
            delay *= 2
