"""Turn send commands into delivered messages, at most once per idempotency key.

Order of effects per command:
1. claim: insert the message row (status `sending`) under the unique idempotency key,
   and commit. A redelivered command finds the row and does nothing.
2. render the template (a missing variable fails the send with the reason).
3. call the provider (bounded retries on transient errors).
4. record the outcome and its delivery event (outbox) in one transaction.
The one window left: a crash after the provider accepted the message and before step 4
commits. The message was sent once; the row stays `sending` and is never re-sent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert

from services.messaging.domain.render import RenderError, render
from services.messaging.providers.email import PermanentFailure, SmtpSender, build_email
from services.messaging.tables import messages, outbox, templates
from shared.contracts.delivery import DeliveryEvent, DeliveryStatus
from shared.contracts.envelope import message_key
from shared.contracts.send import Channel, SendCommand
from shared.db import add_to_outbox
from shared.kafka import Record
from shared.kafka.errors import is_transient
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)
PROVIDER_ATTEMPTS = 3
CONCURRENCY = 32  # provider calls in flight per polled batch


async def handle_send_commands(rt: ServiceRuntime, records: list[Record]) -> None:
    """Customers are delivered concurrently; one customer's commands stay in order."""
    per_customer: dict[str, list[SendCommand]] = {}
    for record in records:
        per_customer.setdefault(record.value.profile_id, []).append(record.value)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def run(commands: list[SendCommand]) -> None:
        async with gate:
            for cmd in commands:
                await deliver(rt, cmd)

    results = await asyncio.gather(*(run(c) for c in per_customer.values()),
                                   return_exceptions=True)
    # Re-raise the first failure so the loop retries or dead-letters; the delivered ones are
    # recorded and their redelivery is a no-op.
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def deliver(rt: ServiceRuntime, cmd: SendCommand) -> None:
    message_id = await _claim(rt, cmd)
    if message_id is None:
        return  # already handled (or in flight when a crash happened): never send twice
    try:
        content = await _render(rt, cmd)
        await _send(rt, cmd, message_id, content)
    except (RenderError, PermanentFailure) as exc:
        return await _finish(rt, cmd, message_id, DeliveryStatus.failed, reason=str(exc))
    except Exception as exc:
        if not is_transient(exc):
            raise
        return await _finish(rt, cmd, message_id, DeliveryStatus.failed,
                             reason=f"provider unavailable after {PROVIDER_ATTEMPTS} attempts")
    await _finish(rt, cmd, message_id, DeliveryStatus.sent, content=content)


async def _claim(rt: ServiceRuntime, cmd: SendCommand) -> str | None:
    message_id = str(uuid.uuid4())
    async with rt.engine.begin() as conn:
        inserted = await conn.execute(insert(messages).values(
            id=message_id, workspace_id=cmd.workspace_id, idempotency_key=cmd.idempotency_key,
            profile_id=cmd.profile_id, channel=cmd.channel.value, template=cmd.template,
            status="sending", recipient=cmd.to.email or cmd.to.phone,
            journey=cmd.journey.model_dump(mode="json") if cmd.journey else None,
        ).on_conflict_do_nothing().returning(messages.c.id))
        claimed: str | None = inserted.scalar()
        return claimed


async def _render(rt: ServiceRuntime, cmd: SendCommand) -> dict[str, Any]:
    async with rt.engine.connect() as conn:
        tpl = (await conn.execute(select(templates).where(
            templates.c.workspace_id == cmd.workspace_id, templates.c.key == cmd.template)
        )).mappings().first()
    if tpl is None:
        raise RenderError(f"template '{cmd.template}' does not exist")
    if tpl["channel"] != cmd.channel.value:
        raise RenderError(f"template '{cmd.template}' is for {tpl['channel']}, not {cmd.channel}")
    rendered = render(subject=tpl["subject"], html=tpl["html"], text=tpl["text"],
                      data=cmd.context)
    return {"subject": rendered.subject, "html": rendered.html, "text": rendered.text,
            "rendered": rendered}


async def _send(rt: ServiceRuntime, cmd: SendCommand, message_id: str,
                content: dict[str, Any]) -> None:
    if cmd.channel is not Channel.email:
        raise PermanentFailure(f"channel {cmd.channel} is not configured")
    if not cmd.to.email:
        raise PermanentFailure("no email address")
    sender = rt.parts.extras.get("smtp")
    if not isinstance(sender, SmtpSender):
        sender = rt.parts.extras["smtp"] = SmtpSender(rt.settings.smtp_url)
    email = build_email(sender=rt.settings.email_from, to=cmd.to.email,
                        rendered=content["rendered"], message_id=message_id)
    for attempt in range(1, PROVIDER_ATTEMPTS + 1):
        try:
            return await sender.send(email)
        except PermanentFailure:
            raise
        except Exception as exc:
            if not is_transient(exc) or attempt == PROVIDER_ATTEMPTS:
                raise
            # Exponential backoff with full jitter.
            await asyncio.sleep(random.uniform(0, 0.2 * 2**attempt))


async def _finish(rt: ServiceRuntime, cmd: SendCommand, message_id: str, status: DeliveryStatus,
                  *, reason: str | None = None, content: dict[str, Any] | None = None) -> None:
    event = DeliveryEvent(
        id=f"{message_id}:{status.value}", workspace_id=cmd.workspace_id,
        profile_id=cmd.profile_id, message_id=message_id, idempotency_key=cmd.idempotency_key,
        status=status, channel=cmd.channel, template=cmd.template, journey=cmd.journey,
        reason=reason, occurred_at=datetime.now(UTC))
    values: dict[str, Any] = {"status": status.value, "error": reason, "updated_at": func.now(),
                              "attempts": messages.c.attempts + 1}
    if content:
        values.update(subject=content["subject"], body=content["text"] or content["html"])
    async with rt.engine.begin() as conn:
        await conn.execute(update(messages).where(messages.c.id == message_id).values(**values))
        ids = await add_to_outbox(conn, outbox, rt.settings.topic("delivery-events"),
                                  "delivery-events",
                                  [(message_key(cmd.workspace_id, cmd.profile_id), event)])
    if status is DeliveryStatus.failed:
        log.info("message %s failed: %s", message_id, reason)
    assert rt.relay is not None
    await rt.relay.publish(ids)
