"""Templates, their versions and snippets: what a save writes and a render reads."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Table, delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.messaging.tables import snippets, template_versions, templates


async def load_snippets(conn: AsyncConnection, workspace_ids: Iterable[str]
                        ) -> dict[str, dict[str, str]]:
    """The snippets of these workspaces, by workspace then name."""
    ids = sorted(set(workspace_ids))
    found: dict[str, dict[str, str]] = {w: {} for w in ids}
    if ids:
        rows = await conn.execute(select(snippets.c.workspace_id, snippets.c.name,
                                         snippets.c.source)
                                  .where(snippets.c.workspace_id.in_(ids)))
        for workspace_id, name, source in rows:
            found[workspace_id][name] = source
    return found


async def save_template(conn: AsyncConnection, *, workspace_id: str, key: str,
                        values: dict[str, Any]) -> Any:
    """Create or replace a template as a new immutable version; returns the template row.
    Concurrent saves of one key are serialised on the template row."""
    current = (await conn.execute(select(templates.c.version, templates.c.strict).where(
        templates.c.workspace_id == workspace_id, templates.c.key == key).with_for_update()
    )).first()
    if values.get("strict") is None:  # an earlier save's choice is kept
        values = {**values, "strict": bool(current.strict) if current else False}
    if current is not None:
        version = current.version + 1
    else:  # deleted and created again: its versions go on
        version = 1 + ((await conn.execute(select(func.max(template_versions.c.version)).where(
            template_versions.c.workspace_id == workspace_id,
            template_versions.c.key == key))).scalar() or 0)
    if current is None:
        row = (await conn.execute(templates.insert().values(
            workspace_id=workspace_id, key=key, version=version, **values
        ).returning(templates))).mappings().one()
    else:
        row = (await conn.execute(templates.update().where(
            templates.c.workspace_id == workspace_id, templates.c.key == key
        ).values(version=version, updated_at=func.now(), **values).returning(templates)
        )).mappings().one()
    await conn.execute(template_versions.insert().values(
        workspace_id=workspace_id, key=key, version=version, **values))
    return row


async def versions(conn: AsyncConnection, *, workspace_id: str, key: str) -> list[Any]:
    rows = await conn.execute(select(template_versions).where(
        template_versions.c.workspace_id == workspace_id, template_versions.c.key == key
    ).order_by(template_versions.c.version.desc()))
    return list(rows.mappings().all())


async def template_rows(conn: AsyncConnection, workspace_id: str) -> list[Any]:
    """The workspace's templates, by key."""
    return list((await conn.execute(select(templates).where(
        templates.c.workspace_id == workspace_id).order_by(templates.c.key))).mappings().all())


def _named(table: Table, workspace_id: str, name: str) -> Any:
    """A template (by key) or snippet (by name) of a workspace."""
    return (table.c.workspace_id == workspace_id) & (table.c[_NAME[table.name]] == name)


_NAME = {"templates": "key", "snippets": "name"}


async def _row(conn: AsyncConnection, table: Table, workspace_id: str, name: str) -> Any:
    return (await conn.execute(select(table).where(_named(table, workspace_id, name)))
            ).mappings().first()


async def _delete(conn: AsyncConnection, table: Table, workspace_id: str, name: str) -> bool:
    result = await conn.execute(delete(table).where(_named(table, workspace_id, name)))
    return bool(result.rowcount)


async def template_row(conn: AsyncConnection, workspace_id: str, key: str) -> Any:
    """One template's row (its latest version), or None."""
    return await _row(conn, templates, workspace_id, key)


async def delete_template(conn: AsyncConnection, workspace_id: str, key: str) -> bool:
    """False when there was no such template (its versions stay)."""
    return await _delete(conn, templates, workspace_id, key)


async def save_snippet(conn: AsyncConnection, workspace_id: str, name: str,
                       source: str) -> Any:
    """Create or replace a snippet; returns its row."""
    stmt = insert(snippets).values(workspace_id=workspace_id, name=name, source=source)
    return (await conn.execute(stmt.on_conflict_do_update(
        index_elements=[snippets.c.workspace_id, snippets.c.name],
        set_={"source": source, "updated_at": func.now()}).returning(snippets))).mappings().one()


async def snippet_row(conn: AsyncConnection, workspace_id: str, name: str) -> Any:
    """One snippet's row, or None."""
    return await _row(conn, snippets, workspace_id, name)


async def delete_snippet(conn: AsyncConnection, workspace_id: str, name: str) -> bool:
    """False when there was no such snippet."""
    return await _delete(conn, snippets, workspace_id, name)
