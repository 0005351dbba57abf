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

import asyncio
import logging
from typing import TYPE_CHECKING

import asyncpg
from prometheus_client import Counter

from services.messaging import store
from services.messaging.tables import codes as codes_table

if TYPE_CHECKING:
    from services.messaging.bootstrap import Messaging
    from services.messaging.delivery import Outcome
    from services.messaging.prepare import Prepared
    from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)
POOL_EMPTY = Counter("touchpoint_code_pool_empty_total",
                     "Sends failed because a discount code pool was empty", ["workspace"])

_T = codes_table.fullname
_MINE = f"SELECT code FROM {_T} WHERE workspace_id = $1 AND pool = $2 AND profile_id = $3"
_TAKE = (f"UPDATE {_T} SET profile_id = $3, message_id = $4, assigned_at = now() "
         f"WHERE (workspace_id, pool, code) = (SELECT workspace_id, pool, code FROM {_T} "
         "WHERE workspace_id = $1 AND pool = $2 AND profile_id IS NULL "
         "LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING code")
_ANY_FREE = (f"SELECT EXISTS (SELECT 1 FROM {_T} WHERE workspace_id = $1 AND pool = $2 "
             "AND profile_id IS NULL)")
_RELEASE = (f"UPDATE {_T} SET profile_id = NULL, message_id = NULL, assigned_at = NULL "
            "WHERE message_id = ANY($1::text[])")


class PoolEmpty(Exception):
    def __init__(self, pool: str) -> None:
        super().__init__(f"code pool {pool} empty")
        self.pool = pool


async def code_for(db: store.Driver, *, workspace_id: str, pool: str, profile_id: str,
                   message_id: str) -> str:
    """The customer's code from `pool`: theirs if they have one, else a free one."""
    for attempt in range(4):
        if (mine := await db.fetchval(_MINE, workspace_id, pool, profile_id)) is not None:
            return str(mine)
        try:
            async with db.transaction():  # a savepoint: a lost race leaves the rest intact
                taken = await db.fetchval(_TAKE, workspace_id, pool, profile_id, message_id)
        except asyncpg.UniqueViolationError:  # another replica gave this customer one now
            continue
        if taken is not None:
            return str(taken)
        # Every free code was locked by other transactions: empty only if none of them is
        # still free once they are done (a lost race releases its row).
        if not await db.fetchval(_ANY_FREE, workspace_id, pool):
            break
        await asyncio.sleep(0.01 * (attempt + 1))
    raise PoolEmpty(pool)


async def hand_out_codes(rt: ServiceRuntime, m: Messaging, prepared: list[Prepared],
                         state: store.SendState) -> list[Prepared]:
    """Messages whose template asks for codes get them and are rendered again with them;
    the others are returned as they are."""
    from services.messaging.prepare import prepare

    wanting = [i for i, p in enumerate(prepared) if p.pools and not p.verdict]
    if not wanting:
        return prepared
    out = list(prepared)
    async with store.transaction(rt.engine) as db:
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
                await db.execute(_RELEASE, [p.message_id])
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


async def release_unsent(db: store.Driver, outcomes: list[Outcome]) -> None:
    """In the transaction that records `outcomes`: codes handed out by messages that failed
    unsent go back to their pools (a code already the customer's from an earlier message
    stays theirs, and so does one whose provider call has an unknown outcome: it may have
    reached them)."""
    ids = [o.prepared.message_id for o in outcomes
           if o.status == "failed" and o.prepared.codes and not _maybe_delivered(o.reason)]
    if ids:
        await db.execute(_RELEASE, ids)
