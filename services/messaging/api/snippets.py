"""Snippets: Liquid partials a template includes with `{% render 'name' %}`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from services.messaging.api.deps import EngineDep
from services.messaging.domain.template_check import check_limits, check_source
from services.messaging.store import templates as template_store
from shared.http.auth import AdminDep
from shared.http.contracts import answers
from shared.http.problems import Problem

router = APIRouter(prefix="/v1", tags=["templates"])
SnippetName = Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_\-.]+$")


class SnippetIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"source": "<p>Questions? Reply to this email.</p>"}]})
    source: str = Field(max_length=64 * 1024, description="Liquid source")


class SnippetOut(BaseModel):
    name: str
    source: str
    updated_at: Any


@router.put("/snippets/{name}", response_model=SnippetOut)
async def put_snippet(body: SnippetIn, engine: EngineDep, principal: AdminDep,
                      name: str = SnippetName) -> dict[str, Any]:
    """Create or replace a snippet; refused with line and column when it doesn't parse, uses
    an unknown filter or partial, or goes over a render limit (renders itself, say)."""
    ws = principal.workspace_id
    async with engine.begin() as conn:
        known = (await template_store.load_snippets(conn, [ws]))[ws]
        with_it = {**known, name: body.source}
        problems = check_source(body.source, snippets=with_it)
        if not problems and (limit := check_limits(subject=None, html=None, text=body.source,
                                                   snippets=with_it)):
            problems = [{"message": limit, "line": 1, "column": 0}]
        if problems:
            first = problems[0]
            raise Problem(400, "Invalid snippet", f"source: {first['message']} (line "
                                                  f"{first['line']}, column {first['column']})",
                          errors=[{"field": "source", **p} for p in problems])
        row = await template_store.save_snippet(conn, ws, name, body.source)
    return {k: row[k] for k in SnippetOut.model_fields}


@router.get("/snippets/{name}", response_model=SnippetOut, responses=answers(None, 404))
async def get_snippet(engine: EngineDep, principal: AdminDep,
                      name: str = SnippetName) -> dict[str, Any]:
    """One snippet."""
    async with engine.connect() as conn:
        row = await template_store.snippet_row(conn, principal.workspace_id, name)
    if row is None:
        raise Problem(404, "Not found", f"no snippet '{name}'")
    return {k: row[k] for k in SnippetOut.model_fields}


@router.delete("/snippets/{name}", status_code=204, responses=answers(None, 404))
async def delete_snippet(engine: EngineDep, principal: AdminDep,
                         name: str = SnippetName) -> None:
    """Delete a snippet; templates that render it fail to render until it is back."""
    async with engine.begin() as conn:
        deleted = await template_store.delete_snippet(conn, principal.workspace_id, name)
    if not deleted:
        raise Problem(404, "Not found", f"no snippet '{name}'")
