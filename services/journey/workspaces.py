"""What an engine transaction reads about its workspaces, in one statement: the contact
policies, the template facts and (for signals) the live journeys' versions; for a
consumer's batch, with the inbox claim.

A consumer's poll used to read these in five statements (policies and templates twice
where a workspace has no policy, then the live journeys with their documents), a timer
claim in two: each a round trip, and at a poll of a few events most of its fixed cost.
They are still read in the batch's own transaction (whatever committed before it began
is seen, so a journey published or paused takes effect from the next batch, as before),
only together. Documents are read only for versions this process has not parsed yet
(`Documents.of`, once per version: published versions never change), not on every poll.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from services.journey.domain.document import JourneyDocument
from services.journey.domain.policy import TemplateMeta
from services.journey.policy.store import Loaded, loaded
from services.journey.store import Documents
from services.journey.tables import journey_versions, journeys, policies, templates_seen
from shared.db.driver import driver
from shared.db.inbox import claim_pairs_cte, pairs


# One row shape for the three kinds: (kind, workspace, key, version, document, a, b, c, at);
# `$w` the workspaces, `$l` whether to read the live journeys.
def _read(w: int, live: int) -> str:
    return (
        "SELECT 'p' AS kind, workspace_id, NULL::text AS key, NULL::int AS version, document, "
        "salt::text AS a, NULL::text AS b, NULL::text AS c, updated_at "
        f"FROM {policies.fullname} WHERE workspace_id = ANY(${w}::varchar[]) "
        "UNION ALL SELECT 't', workspace_id, key, NULL, NULL, channel, category, topic, NULL "
        f"FROM {templates_seen.fullname} WHERE workspace_id = ANY(${w}::varchar[]) "
        "UNION ALL SELECT 'j', j.workspace_id, j.key, v.version, NULL, NULL, NULL, NULL, NULL "
        f"FROM {journeys.fullname} AS j JOIN {journey_versions.fullname} AS v ON v.workspace_id = "
        "j.workspace_id AND v.key = j.key AND v.version = j.published_version "
        f"WHERE ${live}::bool AND j.status = 'published' "
        f"AND j.workspace_id = ANY(${w}::varchar[])")


_READ = _read(1, 2)


@lru_cache(maxsize=4)
def _claim_and_read(inbox: Table) -> str:
    """The inbox claim (shared/db/inbox.py's, $1 the consumers and $2 the ids) as a part of
    the read: the transaction's first statement does both."""
    return (f"WITH {claim_pairs_cte(inbox)} SELECT 'i', consumer, message_id, NULL, NULL, "
            f"NULL, NULL, NULL, NULL FROM claimed UNION ALL {_read(3, 4)}")


@dataclass
class Workspaces:
    """The batch's workspaces as read: policies, template facts, and with `live` the
    current version of every journey that takes new entries, in key order."""

    policies: dict[str, Loaded] = field(default_factory=dict)
    templates: dict[str, dict[str, TemplateMeta]] = field(default_factory=dict)
    live: dict[str, list[tuple[int, JourneyDocument]]] = field(default_factory=dict)
    # With `claim`: the ids not seen before, by consumer.
    claimed: dict[str, set[str]] = field(default_factory=dict)


async def read(conn: AsyncConnection, docs: Documents, workspaces: Iterable[str], *,
               live: bool, claim: tuple[Table, dict[str, list[str]]] | None = None
               ) -> Workspaces:
    """`claim`: (inbox table, message ids by consumer) to claim in the same statement."""
    wanted = sorted(set(workspaces))
    out = Workspaces()
    if claim is not None:
        inbox, ids = claim
        out.claimed = {consumer: set() for consumer in ids}
        rows = await (await driver(conn)).fetch(_claim_and_read(inbox), *pairs(ids), wanted,
                                                live)
    elif wanted:
        rows = await (await driver(conn)).fetch(_READ, wanted, live)
    else:
        return out
    versions: list[tuple[str, str, int]] = []
    for kind, ws, key, version, document, a, b, c, at in rows:
        if kind == "i":
            out.claimed[ws].add(key)  # ws: the consumer
        elif kind == "p":
            out.policies[ws] = loaded(ws, document, a, at)
        elif kind == "t":
            out.templates.setdefault(ws, {})[key] = TemplateMeta(a, b, c)
        else:
            versions.append((ws, key, version))
    await docs.of(conn, versions)  # a round trip only for versions not parsed yet
    for ws, key, version in sorted(versions, key=lambda v: v[1]):
        out.live.setdefault(ws, []).append((version, docs.get(ws, key, version)))
    return out
