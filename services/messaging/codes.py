"""Discount codes at send time: one code per (customer, pool), handed out before the
message is claimed and released when it fails unsent.

A template's `code` filters name their pools on the first render (`Prepared.pools`).
`hand_out_codes` then gives each such message its customer's code from every pool, in one
transaction for the wave, and renders it again with them. A code is taken with
`FOR UPDATE SKIP LOCKED` (two replicas never wait on, nor take, the same code), and the
unique (workspace, pool, profile) constraint keeps one code per customer when two
replicas serve the same customer at once: the loser reads the winner's code. Because a
customer keeps their code, a crash between this transaction and the claim loses nothing:
the redelivered command finds the same code. An empty pool fails the message
(`code pool <key> empty`), counted in touchpoint_code_pool_empty_total.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter

from services.messaging.message import Outcome, Prepared
from services.messaging.parts import Messaging
from services.messaging.prepare import prepare
from services.messaging.store import Driver, SendState, transaction
from services.messaging.store.codes import PoolEmpty, code_for, release_codes
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)
POOL_EMPTY = Counter("touchpoint_code_pool_empty_total",
                     "Sends failed because a discount code pool was empty", ["workspace"])


async def hand_out_codes(rt: ServiceRuntime, m: Messaging, prepared: list[Prepared],
                         state: SendState) -> list[Prepared]:
    """Messages whose template asks for codes get them and are rendered again with them;
    the others are returned as they are."""
    wanting = [i for i, p in enumerate(prepared) if p.pools and not p.verdict]
    if not wanting:
        return prepared
    out = list(prepared)
    async with transaction(rt.engine) as db:
        for i in wanting:
            p = prepared[i]
            ws = p.cmd.workspace_id
            given: dict[str, str] = {}
            try:
                for pool in p.pools:
                    given[pool] = await code_for(db, workspace_id=ws, pool=pool,
                                                 profile_id=p.cmd.profile_id,
                                                 message_id=p.message_id)
            except PoolEmpty as exc:
                POOL_EMPTY.labels(ws).inc()
                log.warning("code pool empty: workspace %s pool %s", ws, exc.pool)
                await release_codes(db, [p.message_id])
                p.verdict = ("failed", str(exc))
                continue
            again = prepare(m, p.cmd, p.message_id, state, p.addresses, codes=given,
                            test=p.test)
            again.pools = p.pools
            out[i] = again
    return out


def _maybe_delivered(reason: str | None) -> bool:
    """A provider call whose outcome is unknown may have delivered the code: it stays."""
    return "outcome unknown" in (reason or "")


async def release_unsent(db: Driver, outcomes: list[Outcome]) -> None:
    """In the transaction that records `outcomes`: codes handed out by messages that failed
    unsent go back to their pools (a code already the customer's from an earlier message
    stays theirs, and so does one whose provider call has an unknown outcome: it may have
    reached them)."""
    ids = [o.prepared.message_id for o in outcomes
           if o.status == "failed" and o.prepared.codes and not _maybe_delivered(o.reason)]
    await release_codes(db, ids)
