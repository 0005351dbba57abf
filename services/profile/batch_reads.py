"""What every batch reads before it applies, in one round trip: the inbox claim, the
workspaces' conventions and their segment rules. Never commits.

Each was a statement of its own (three round trips per poll, whatever the batch's size);
one statement of UNION ALL branches returns them as tagged rows. The reads cover the
workspaces of every record of the poll, the fresh ones' among them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from services.profile.domain.conventions import Conventions
from services.profile.domain.segments import Rule, rule_adapter
from services.profile.repository import fetch
from shared.conditions import STORED
from shared.db.inbox import claim_pairs_cte, pairs


@dataclass(frozen=True)
class Reads:
    conventions: dict[str, Conventions]  # every workspace asked for (defaults where unset)
    rules: dict[str, dict[str, Rule]]  # workspace -> segment key -> rule


def _reads(param: int) -> str:
    return (f"SELECT 1, workspace_id, NULL::text, conventions FROM profile.workspace_settings "
            f"WHERE workspace_id = ANY(${param}::text[]) UNION ALL SELECT 2, workspace_id, key, "
            f"rule FROM profile.segments WHERE workspace_id = ANY(${param}::text[])")


_READS = _reads(1)


@lru_cache(maxsize=4)
def _claim_and_read_sql(inbox: Table) -> str:
    """The inbox claim (shared/db/inbox.py's, $1 the consumers and $2 the ids) as a part of
    the read: the transaction's first statement does both."""
    return (f"WITH {claim_pairs_cte(inbox)} SELECT 0, message_id, consumer, NULL::jsonb "
            f"FROM claimed UNION ALL {_reads(3)}")


async def claim_and_read(conn: AsyncConnection, inbox: Table,
                         message_ids: Mapping[str, Iterable[str]], workspaces: Iterable[str]
                         ) -> tuple[dict[str, set[str]], Reads]:
    """Claim the message ids of each consumer (`message_ids` by consumer name: one poll's
    topics) in `inbox`: those not seen before come back, by consumer (the inbox's dedupe, in
    the caller's transaction). And read what the batch needs."""
    wanted = list(set(workspaces))
    rows = await fetch(conn, _claim_and_read_sql(inbox), *pairs(message_ids), wanted)
    fresh: dict[str, set[str]] = {consumer: set() for consumer in message_ids}
    for tag, message_id, consumer, _ in rows:
        if tag == 0:
            fresh[consumer].add(message_id)
    return fresh, _decode(wanted, rows)


async def read(conn: AsyncConnection, workspaces: Iterable[str]) -> Reads:
    """The same reads without a claim (a caller that claimed otherwise, or needs none)."""
    wanted = list(set(workspaces))
    return _decode(wanted, await fetch(conn, _READS, wanted) if wanted else [])


def _decode(wanted: list[str], rows: list[Any]) -> Reads:
    convs: dict[str, Conventions] = {}
    rules: dict[str, dict[str, Rule]] = {ws: {} for ws in wanted}
    for tag, ws, key, doc in rows:
        if tag == 1:
            convs[ws] = Conventions.model_validate(doc)
        elif tag == 2:
            rules[ws][key] = rule_adapter.validate_python(doc, context=STORED)
    return Reads({ws: convs.get(ws) or Conventions() for ws in wanted}, rules)
