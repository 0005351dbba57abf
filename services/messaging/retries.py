"""The retry sweeper: sends the `retrying` messages that are due, in every messaging process.

Each pass (every second, more at once while there is a backlog):
1. messages a previous pass marked `sending` whose lease ran out (the process died during
   the provider call) become `unknown`, with an `unknown` delivery event;
2. due `retrying` messages are claimed `FOR UPDATE SKIP LOCKED` (replicas never take the same
   one) by moving `retry_at` to the end of a lease, then checked (consent, suppression,
   expiry) and rendered again from the kept command under their own id, and sent through
   the ledger like fresh ones, one provider attempt each (the next retry is durable again).
A crash after the claim leaves the message `retrying` until the lease ends: it is retried.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from services.messaging.codes import hand_out_codes
from services.messaging.delivery_events import event_from_row
from services.messaging.ledger import Ledger, send_all
from services.messaging.message import UNKNOWN
from services.messaging.parts import Messaging
from services.messaging.prepare import prepare, recipient_addresses
from services.messaging.store import emit, load_send_state, transaction
from services.messaging.store.sends import fail_unusable, lease_due, stale_to_unknown
from shared.clock import pause
from shared.contracts.delivery import DeliveryStatus
from shared.contracts.send import SendCommand
from shared.kafka.errors import is_transient
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)
LEASE_S = 300  # longer than one provider attempt can take (timeouts are at most 120 s)


class RetrySweeper:
    def __init__(self, rt: ServiceRuntime, m: Messaging, *, interval: float = 1.0,
                 batch: int = 500) -> None:
        self.rt, self.m, self.interval, self.batch = rt, m, interval, batch
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            busy = False
            try:
                busy = await self.sweep() >= self.batch
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("retry sweeper: dependency down (%s)", type(exc).__name__)
            if not busy:
                await pause(self._stopping, self.interval)

    async def sweep(self) -> int:
        """One pass; returns how many due messages it claimed."""
        now = datetime.now(UTC)
        async with transaction(self.rt.engine) as db:
            stale = await stale_to_unknown(db, self.batch, UNKNOWN)
            rows = await emit(db, self.rt.settings, [
                event_from_row(r, DeliveryStatus.unknown, now, reason=UNKNOWN) for r in stale])
        self.rt.publish_soon(rows)
        async with transaction(self.rt.engine) as db:
            due = await lease_due(db, self.batch, float(LEASE_S))
        if due:
            await self._send(due)
        return len(due)

    async def _send(self, due: list[Any]) -> None:
        cmds: list[tuple[Any, SendCommand]] = []
        unusable: list[str] = []
        for r in due:
            try:
                cmds.append((r, SendCommand.model_validate(r["command"])))
            except ValidationError:
                unusable.append(r["id"])
        if unusable:  # never a crash loop over a row: failed, with the reason
            async with transaction(self.rt.engine) as db:
                await fail_unusable(db, unusable)
        targets = [(r, c, recipient_addresses(c)) for r, c in cmds]
        async with self.rt.engine.connect() as conn:
            state = await load_send_state(conn, [(c, found) for _, c, found in targets])
        prepared = await hand_out_codes(  # the codes these messages already hold
            self.rt, self.m, [prepare(self.m, cmd, row["id"], state, addresses)
                              for row, cmd, addresses in targets], state)
        for p, (row, _cmd, _to) in zip(prepared, targets, strict=True):
            p.tries, p.retry_since = row["attempts"], row["retry_since"]
        for workspace_id in {p.cmd.workspace_id for p in prepared if not p.verdict}:
            await self.m.routes.channel_configs(self.rt.engine, workspace_id)
        await send_all(self.rt, self.m, Ledger(self.rt, self.m), prepared, attempts=1)
