"""Turn send commands into delivered messages, at most once per idempotency key.

Per polled batch:
1. claim: one transaction inserts every new command's message row (`queued`, unique on
   the idempotency key) with its `queued` delivery event. A redelivered command finds its
   row and is skipped, except: a row still `queued` (the crash came before any provider
   call) is sent now; a row left `sending` (the crash came during the provider call) is
   never re-sent but reported `failed`, outcome unknown.
2. load send-time state for the whole batch: templates, messaging's consent copy, the
   undeliverable addresses.
3. in waves of about `messaging_wave_size` messages (a customer's messages all in one
   wave), two waves in flight: check consent and suppression and render the wave's
   messages, commit `queued -> sending` for those to send, call the providers (customers
   concurrently, one customer's messages in order), then record every outcome (suppressed
   and failed ones too) with its delivery events in one transaction. Rendering inside the
   wave overlaps one wave's CPU work with the other's provider round trips.
4. publish the batch's outbox rows in the background (in order, one batch after the
   other), so the next batch need not wait for the broker's acks; the rows are durable
   and the sweeper publishes whatever a crash leaves behind.

The window left: a crash during a wave's provider calls. Its messages stay `sending`:
those already accepted went out once, the others are not sent, and none is sent twice.
docs/messaging.md explains how the SMTP side of that window is narrowed.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import NamedTuple, Protocol, TypeVar

from services.messaging import store
from services.messaging.bootstrap import Messaging
from services.messaging.delivery import Outcome, record, send, verdict_outcome
from services.messaging.prepare import Prepared, event, prepare
from services.messaging.tables import messages
from shared.contracts.delivery import DeliveryStatus
from shared.contracts.send import SendCommand
from shared.kafka import Record
from shared.runtime import ServiceRuntime

T = TypeVar("T", bound="_ForCustomer")
WAVES_IN_FLIGHT = 2  # one wave's commits overlap the other's provider calls
UNKNOWN = ("outcome unknown: the service stopped between the provider call and recording "
           "its result; not sent again to avoid a duplicate")


async def handle_send_commands(rt: ServiceRuntime, m: Messaging, records: list[Record]) -> None:
    unique: dict[tuple[str, str], SendCommand] = {}
    for record_ in records:
        cmd: SendCommand = record_.value
        unique.setdefault((cmd.workspace_id, cmd.idempotency_key), cmd)
    claimed, outbox_ids = await _claim(rt, list(unique.values()))
    todo = [Claimed(cmd, claimed[k]) for k, cmd in unique.items() if k in claimed]
    if todo:
        async with rt.engine.connect() as conn:
            state = await store.load_send_state(
                conn, template_keys={(c.workspace_id, c.template) for c, _ in todo},
                profiles={(c.workspace_id, c.profile_id) for c, _ in todo},
                addresses={(c.workspace_id, c.channel.value, store.address_hash(c.channel, a))
                           for c, _ in todo for a in _addresses(c)})
        waves = _waves(todo, m.settings.messaging_wave_size)
        in_flight = asyncio.Semaphore(WAVES_IN_FLIGHT)

        async def run(wave: list[Claimed]) -> list[int]:
            async with in_flight:
                return await _wave(rt, m, wave, state)

        failure: BaseException | None = None
        for result in await asyncio.gather(*(run(w) for w in waves), return_exceptions=True):
            if isinstance(result, BaseException):
                failure = failure or result
            else:
                outbox_ids += result
        if failure is not None:  # the loop retries the batch; finished messages are no-ops
            m.publish_in_background(rt, outbox_ids)
            raise failure
    m.publish_in_background(rt, outbox_ids)


class _ForCustomer(Protocol):
    @property
    def cmd(self) -> SendCommand: ...


class Claimed(NamedTuple):
    cmd: SendCommand
    message_id: str


def _waves(items: list[T], size: int) -> list[list[T]]:
    """Waves of about `size` messages; all of a customer's messages in one wave, in order,
    so waves can run side by side without reordering anyone's messages."""
    per_customer: dict[str, list[T]] = {}
    for item in items:
        per_customer.setdefault(f"{item.cmd.workspace_id}:{item.cmd.profile_id}", []).append(item)
    waves: list[list[T]] = [[]]
    for group in per_customer.values():
        if waves[-1] and len(waves[-1]) + len(group) > size:
            waves.append([])
        waves[-1] += group
    return [w for w in waves if w]


async def _wave(rt: ServiceRuntime, m: Messaging, todo: list[Claimed],
                state: store.SendState) -> list[int]:
    prepared = [prepare(m, cmd, mid, state, _addresses(cmd)) for cmd, mid in todo]
    refused = [verdict_outcome(p) for p in prepared if p.verdict]
    wave = [p for p in prepared if not p.verdict]
    if not wave:
        return await record(rt, refused)
    # Channel configs are loaded before the wave is marked `sending`: a database outage
    # here leaves the messages `queued`, so the retried batch still sends them.
    for workspace_id in {p.cmd.workspace_id for p in wave}:
        await m.channel_configs(rt.engine, workspace_id)
    async with store.transaction(rt.engine) as db:
        mine = await store.mark_sending(db, [p.message_id for p in wave])
    per_customer: dict[str, list[Prepared]] = {}
    for p in wave:
        if p.message_id in mine:  # the others were taken by another worker (rebalance)
            per_customer.setdefault(f"{p.cmd.workspace_id}:{p.cmd.profile_id}", []).append(p)
    gate = asyncio.Semaphore(m.settings.messaging_concurrency)

    async def run(items: list[Prepared]) -> list[Outcome]:
        async with gate:
            return [await send(rt, m, p) for p in items]

    results = await asyncio.gather(*(run(items) for items in per_customer.values()))
    return await record(rt, refused + [o for outcomes in results for o in outcomes])


def _addresses(cmd: SendCommand) -> list[str]:
    profile = cmd.context.get("profile") or {}
    match cmd.channel.value:
        case "email":
            found = cmd.to.email or profile.get("email")
        case "sms":
            found = cmd.to.phone or profile.get("phone")
        case "push":
            return list(dict.fromkeys(cmd.to.push_tokens or profile.get("push_tokens") or []))
        case _:
            found = cmd.to.url
    return [found] if isinstance(found, str) and found else []


# The claim on asyncpg directly (see `store.transaction`): one statement for the batch.
_CLAIM = (f"INSERT INTO {messages.fullname} (id, workspace_id, idempotency_key, profile_id, "
          "channel, template, status, recipient, journey, journey_key) "
          "SELECT id, ws, key, profile, channel, template, 'queued', recipient, journey, jkey "
          "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], "
          "$7::text[], $8::jsonb[], $9::text[]) "
          "AS c(id, ws, key, profile, channel, template, recipient, journey, jkey) "
          "ON CONFLICT DO NOTHING RETURNING id, workspace_id, idempotency_key")
# A redelivered command's row, still unfinished.
_LEFTOVER = (f"SELECT id, workspace_id, idempotency_key, status FROM {messages.fullname} "
             "WHERE (workspace_id, idempotency_key) IN "
             "(SELECT * FROM unnest($1::text[], $2::text[])) "
             "AND status IN ('queued', 'sending') FOR UPDATE")
_UNKNOWN = f"UPDATE {messages.fullname} SET status = 'failed', error = $2 WHERE id = ANY($1)"


async def _claim(rt: ServiceRuntime, cmds: list[SendCommand]) -> tuple[dict[tuple[str, str],
                                                                             str], list[int]]:
    """Message ids to work on, by (workspace, idempotency key), and the outbox rows written."""
    if not cmds:
        return {}, []
    recipients = [", ".join(_addresses(c))[:2000] or None for c in cmds]
    by_key = {(c.workspace_id, c.idempotency_key): c for c in cmds}
    now = datetime.now(UTC)
    async with store.transaction(rt.engine) as db:
        inserted = await db.fetch(
            _CLAIM, [str(uuid.uuid4()) for _ in cmds], [c.workspace_id for c in cmds],
            [c.idempotency_key for c in cmds], [c.profile_id for c in cmds],
            [c.channel.value for c in cmds], [c.template for c in cmds], recipients,
            [c.journey.model_dump_json() if c.journey else None for c in cmds],
            [c.journey.key if c.journey else None for c in cmds])
        fresh = {(r["workspace_id"], r["idempotency_key"]): r["id"] for r in inserted}
        events = [event(by_key[k], mid, DeliveryStatus.queued, now) for k, mid in fresh.items()]
        resumed: dict[tuple[str, str], str] = {}
        if leftover := [k for k in by_key if k not in fresh]:
            again = await db.fetch(_LEFTOVER, [w for w, _ in leftover], [k for _, k in leftover])
            resumed = {(r["workspace_id"], r["idempotency_key"]): r["id"] for r in again
                       if r["status"] == "queued"}
            if unknown := {r["id"]: (r["workspace_id"], r["idempotency_key"]) for r in again
                           if r["status"] == "sending"}:
                await db.execute(_UNKNOWN, list(unknown), UNKNOWN)
                events += [event(by_key[k], mid, DeliveryStatus.failed, now, reason=UNKNOWN)
                           for mid, k in unknown.items()]
        ids = await store.emit(db, rt.settings, events)
    return {**fresh, **resumed}, ids
