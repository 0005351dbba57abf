"""What send-time checks read, loaded for a whole batch: templates, snippets, messaging's
consent copy and the undeliverable addresses."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.messaging.domain.addresses import address_hash
from services.messaging.store.connection import columns, driver
from services.messaging.tables import consents, snippets, templates, undeliverable
from shared.contracts.send import SendCommand


@dataclass
class SendState:
    """What send-time checks need, loaded for a whole batch in one statement."""

    templates: dict[tuple[str, str], Any] = field(default_factory=dict)
    consent: dict[tuple[str, str], dict[str, bool]] = field(default_factory=dict)
    dead: set[tuple[str, str, str]] = field(default_factory=set)  # ws, channel, address hash
    snippets: dict[str, dict[str, str]] = field(default_factory=dict)  # ws -> name -> source


# One statement for the whole state: each template row (LEFT JOIN: a row of NULLs when
# none matches) carries the batch's snippets, stored consents and undeliverable addresses
# as JSON arrays. Four statements before, and the snippets' through SQLAlchemy with a
# BEGIN and a ROLLBACK around it: six round trips of each polled batch's fixed cost.
_STATE = (
    "SELECT t.*, x.state_snippets, x.state_consents, x.state_dead FROM (SELECT "
    "(SELECT jsonb_agg(jsonb_build_array(workspace_id, name, source)) "
    f"FROM {snippets.fullname} WHERE workspace_id = ANY($3::text[])) AS state_snippets, "
    "(SELECT jsonb_agg(jsonb_build_array(workspace_id, profile_id, scope, subscribed)) "
    f"FROM {consents.fullname} WHERE (workspace_id, profile_id) IN "
    "(SELECT * FROM unnest($4::text[], $5::text[]))) AS state_consents, "
    "(SELECT jsonb_agg(jsonb_build_array(workspace_id, channel, address_hash)) "
    f"FROM {undeliverable.fullname} WHERE (workspace_id, channel, address_hash) IN "
    "(SELECT * FROM unnest($6::text[], $7::text[], $8::text[]))) AS state_dead) AS x "
    f"LEFT JOIN LATERAL (SELECT * FROM {templates.fullname} WHERE (workspace_id, key) IN "
    "(SELECT * FROM unnest($1::text[], $2::text[]))) AS t ON true")


async def load_send_state(conn: AsyncConnection,
                          targets: Iterable[tuple[SendCommand, list[str]]], *,
                          consent: bool = True) -> SendState:
    """For these commands and their recipients' addresses (`consent=False`: the stored
    consent is not read, as for a test send). On asyncpg, one statement over unnest
    arrays: SQLAlchemy's expanding IN cost about 20 µs of CPU per message."""
    targets = list(targets)
    template_keys = {(c.workspace_id, c.template) for c, _ in targets}
    profiles = {(c.workspace_id, c.profile_id) for c, _ in targets} if consent else set()
    addresses = {(c.workspace_id, c.channel.value, address_hash(c.channel, a))
                 for c, found in targets for a in found}
    state = SendState()
    if not (template_keys or profiles or addresses):
        return state
    workspaces = sorted({w for w, _ in template_keys})
    rows = await (await driver(conn)).fetch(
        _STATE, *_columns(template_keys, 2), workspaces, *_columns(profiles, 2),
        *_columns(addresses, 3))
    state.templates = {(r["workspace_id"], r["key"]): r for r in rows
                       if r["workspace_id"] is not None}
    state.snippets = {w: {} for w in workspaces}
    first = rows[0]
    for ws, name, source in first["state_snippets"] or []:
        state.snippets[ws][name] = source
    for ws, pid, scope, subscribed in first["state_consents"] or []:
        state.consent.setdefault((ws, pid), {})[scope] = subscribed
    state.dead = {(ws, ch, h) for ws, ch, h in first["state_dead"] or []}
    return state


def _columns(rows: Collection[tuple[str, ...]], width: int) -> list[list[str]]:
    return columns(rows) if rows else [[] for _ in range(width)]
