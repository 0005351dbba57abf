"""Turn send commands into delivered messages, at most once per idempotency key.

Per polled batch: load send-time state for the whole batch (templates, messaging's consent
copy, the undeliverable addresses), then work in waves of about `messaging_wave_size`
messages (a customer's messages all in one wave), two waves in flight:
1. check consent and suppression and render each message, under a fresh message id;
2. claim, in one statement: insert every new command's message row (unique on the
   idempotency key), `queued`, with its `queued` delivery event. A redelivered command finds
   its row and is skipped, except: a row still `queued` (the crash came before its provider
   call) is rendered again under its own id and sent now; a row left `sending` (the crash
   came during its provider call) is never re-sent automatically but reported `unknown`,
   for an operator to resend (POST /v1/messages/{id}/resend);
3. send through the ledger (ledger.py): each message is marked `sending` right before its
   own provider call, in one UPDATE with every other mark and outcome ready at that moment
   (group commit), and its outcome is recorded with its delivery events in the next one;
4. the outbox rows of each flush are published in the background (in order); the rows are
   durable and the sweeper publishes whatever a crash leaves behind.

The window left: a crash during a provider call. Only the messages whose call was in
flight (at most the route's connection pool: a message is marked only once it holds a
slot) stay `sending` and become `unknown`;
those not yet attempted are still `queued` and are sent when the command is redelivered.
docs/messaging.md explains how the SMTP side of that window is narrowed.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import NamedTuple, Protocol, TypeVar

from services.messaging.codes import hand_out_codes
from services.messaging.delivery_events import send_event
from services.messaging.ledger import Ledger, send_all
from services.messaging.message import UNKNOWN, Prepared
from services.messaging.parts import Messaging
from services.messaging.prepare import prepare, recipient_addresses
from services.messaging.store import (
    SendState,
    emit,
    load_send_state,
    one_statement,
    transaction,
)
from services.messaging.store.outbox import arrays
from services.messaging.store.sends import claim_queued, mark_unknown, unfinished
from shared.contracts.delivery import DeliveryStatus
from shared.contracts.send import SendCommand
from shared.db.outbox import OutboxRow
from shared.kafka import Record
from shared.runtime import ServiceRuntime

T = TypeVar("T", bound="_ForCustomer")
WAVES_IN_FLIGHT = 2  # one wave's commits overlap the other's provider calls


async def handle_send_commands(rt: ServiceRuntime, m: Messaging, records: list[Record]) -> None:
    unique: dict[tuple[str, str], SendCommand] = {}
    for record_ in records:
        cmd: SendCommand = record_.value
        unique.setdefault((cmd.workspace_id, cmd.idempotency_key), cmd)
    # Addresses looked up once.
    cmds = [Command(c, recipient_addresses(c)) for c in unique.values()]
    if not cmds:
        return
    async with rt.engine.connect() as conn:
        state = await load_send_state(conn, cmds)
    in_flight = asyncio.Semaphore(WAVES_IN_FLIGHT)
    ledger = Ledger(rt, m)  # both waves' transitions go in the same flushes

    async def run(wave: list[Command]) -> None:
        async with in_flight:
            await _wave(rt, m, wave, state, ledger)

    waves = _waves(cmds, m.settings.messaging_wave_size)
    results = await asyncio.gather(*(run(w) for w in waves), return_exceptions=True)
    # The loop retries the batch; finished messages are no-ops then.
    if failure := next((r for r in results if isinstance(r, BaseException)), None):
        raise failure


class _ForCustomer(Protocol):
    @property
    def cmd(self) -> SendCommand: ...


class Command(NamedTuple):
    cmd: SendCommand
    addresses: list[str]  # the recipient's, see `_addresses`


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


async def _wave(rt: ServiceRuntime, m: Messaging, cmds: list[Command],
                state: SendState, ledger: Ledger) -> None:
    """One wave, start to end."""
    # Checked and rendered before the claim, under a fresh id: a redelivered command's
    # work is wasted (rare), and the claim needs only one transaction.
    prepared = [prepare(m, cmd, str(uuid.uuid4()), state, addresses) for cmd, addresses in cmds]
    prepared = await hand_out_codes(rt, m, prepared, state)  # discount codes, if asked for
    # Channel configs are loaded before anything is marked `sending`.
    for workspace_id in {p.cmd.workspace_id for p in prepared if not p.verdict}:
        await m.routes.channel_configs(rt.engine, workspace_id)
    claimed, resumed, outbox_rows = await _claim(rt, prepared)
    rt.publish_soon(outbox_rows)
    if resumed:  # rendered again under their own ids, with the codes they already hold
        again = [prepare(m, p.cmd, mid, state, p.addresses) for p, mid in resumed]
        claimed += await hand_out_codes(rt, m, again, state)
        order = {id(p.cmd): i for i, p in enumerate(prepared)}  # a customer's in command order
        claimed.sort(key=lambda p: order[id(p.cmd)])
    await send_all(rt, m, ledger, claimed, attempts=m.settings.messaging_provider_attempts)


async def _claim(rt: ServiceRuntime, prepared: list[Prepared]
                 ) -> tuple[list[Prepared], list[tuple[Prepared, str]], list[OutboxRow]]:
    """Insert the wave's new message rows, `queued` (the idempotency key is recorded before
    any provider call), with their `queued` delivery events: one statement, atomic on its
    own. Returns the new messages, the redelivered ones still `queued` with their ids, and
    the outbox rows written. Rows a crash left `sending` become `unknown`."""
    cmds = [p.cmd for p in prepared]
    now = datetime.now(UTC)
    events = arrays(rt.settings, [send_event(p.cmd, p.message_id, DeliveryStatus.queued, now,
                                             **p.event_fields()) for p in prepared])
    async with one_statement(rt.engine) as db:
        fresh_ids, rows = await claim_queued(db, [
            [p.message_id for p in prepared], [c.workspace_id for c in cmds],
            [c.idempotency_key for c in cmds], [c.profile_id for c in cmds],
            [c.channel.value for c in cmds], [c.template for c in cmds],
            ["queued"] * len(prepared),
            [", ".join(p.addresses)[:2000] or None for p in prepared],
            [c.journey.model_dump_json() if c.journey else None for c in cmds],
            [c.journey.key if c.journey else None for c in cmds],
            [p.template_version for p in prepared]], events)
    fresh = [p for p in prepared if p.message_id in fresh_ids]
    resumed: list[tuple[Prepared, str]] = []
    # Redelivered commands (rare): their rows, in a transaction of their own.
    if leftover := {(p.cmd.workspace_id, p.cmd.idempotency_key): p for p in prepared
                    if p.message_id not in fresh_ids}:
        async with transaction(rt.engine) as db:
            again = await unfinished(db, list(leftover))
            resumed = [(leftover[r["workspace_id"], r["idempotency_key"]], r["id"])
                       for r in again if r["status"] == "queued"]
            if unknown := {r["id"]: leftover[r["workspace_id"], r["idempotency_key"]]
                           for r in again if r["status"] == "sending"}:
                await mark_unknown(db, list(unknown),
                                   [p.cmd.model_dump_json() for p in unknown.values()], UNKNOWN)
                rows += await emit(db, rt.settings, [
                    send_event(p.cmd, mid, DeliveryStatus.unknown, now, reason=UNKNOWN)
                    for mid, p in unknown.items()])
    return fresh, resumed, rows
