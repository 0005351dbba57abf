"""Policies and template facts in Postgres. Repositories never commit: callers own the
transaction."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.journey.domain.policy import ContactPolicy, TemplateMeta
from services.journey.tables import policies, templates_seen
from shared.db.driver import driver


@dataclass(frozen=True)
class Loaded:
    policy: ContactPolicy
    salt: str
    updated_at: datetime


# Parsed documents by (workspace, updated_at): a batch re-reads the row (one indexed
# query) but parses a document only when it changed.
_PARSED: dict[tuple[str, datetime], ContactPolicy] = {}


async def load_policies(conn: AsyncConnection, workspaces: Iterable[str]) -> dict[str, Loaded]:
    wanted = sorted(set(workspaces))
    if not wanted:
        return {}
    rows = await (await driver(conn)).fetch(
        f"SELECT workspace_id, document, salt, updated_at FROM "
        f"{policies.schema}.{policies.name} WHERE workspace_id = ANY($1::varchar[])", wanted)
    return {ws: loaded(ws, document, salt, updated_at) for ws, document, salt, updated_at in rows}


def loaded(workspace_id: str, document: Any, salt: str, updated_at: datetime) -> Loaded:
    """A policy row as the engine uses it, its document parsed once per version."""
    parsed = _PARSED.get((workspace_id, updated_at))
    if parsed is None:
        if len(_PARSED) > 10_000:
            _PARSED.clear()
        parsed = _PARSED[(workspace_id, updated_at)] = ContactPolicy.model_validate(document)
    return Loaded(parsed, salt, updated_at)


async def save_policy(conn: AsyncConnection, workspace_id: str, document: dict[str, Any]
                      ) -> Any:
    """Create or replace; the salt is drawn once, so control membership never reshuffles."""
    stmt = insert(policies).values(workspace_id=workspace_id, document=document,
                                   salt=secrets.token_hex(16))
    stmt = stmt.on_conflict_do_update(index_elements=[policies.c.workspace_id],
                                      set_={"document": document,
                                            "updated_at": func.clock_timestamp()})
    return (await conn.execute(stmt.returning(policies))).mappings().one()


async def get_policy(conn: AsyncConnection, workspace_id: str) -> Any:
    return (await conn.execute(select(policies).where(
        policies.c.workspace_id == workspace_id))).mappings().first()


async def load_templates(conn: AsyncConnection, workspaces: Iterable[str]
                         ) -> dict[str, dict[str, TemplateMeta]]:
    wanted = sorted(set(workspaces))
    if not wanted:
        return {}
    rows = await (await driver(conn)).fetch(
        f"SELECT workspace_id, key, channel, category, topic FROM "
        f"{templates_seen.schema}.{templates_seen.name} "
        "WHERE workspace_id = ANY($1::varchar[])", wanted)
    out: dict[str, dict[str, TemplateMeta]] = {}
    for ws, key, channel, category, topic in rows:
        out.setdefault(ws, {})[key] = TemplateMeta(channel, category, topic)
    return out


async def remember_templates(conn: AsyncConnection, workspace_id: str,
                             metas: dict[str, TemplateMeta]) -> None:
    for key, meta in metas.items():
        values = {"channel": meta.channel, "category": meta.category, "topic": meta.topic}
        await conn.execute(insert(templates_seen).values(
            workspace_id=workspace_id, key=key, **values).on_conflict_do_update(
            index_elements=[templates_seen.c.workspace_id, templates_seen.c.key],
            set_={**values, "fetched_at": func.now()}))
