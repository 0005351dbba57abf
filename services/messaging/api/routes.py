"""Messaging management API: templates and the message log."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert

from services.messaging.domain.render import RenderError, check_syntax, render
from services.messaging.tables import messages, templates
from shared.http.auth import AdminDep
from shared.http.paging import Limit, Offset
from shared.http.problems import Problem

router = APIRouter(prefix="/v1", tags=["messaging"])
TemplateKey = Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_\-.]+$")


class TemplateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel: Literal["email", "sms", "push", "webhook"]
    subject: str | None = Field(None, max_length=1000)
    html: str | None = Field(None, max_length=256 * 1024)
    text: str | None = Field(None, max_length=256 * 1024)


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    profile: dict[str, Any] = Field(default_factory=dict)
    event: dict[str, Any] = Field(default_factory=dict)
    journey: dict[str, Any] = Field(default_factory=dict)


def _template_out(row: Any) -> dict[str, Any]:
    return {"key": row["key"], "channel": row["channel"], "subject": row["subject"],
            "html": row["html"], "text": row["text"], "updated_at": row["updated_at"]}


@router.put("/templates/{key}")
async def put_template(body: TemplateIn, request: Request, principal: AdminDep,
                       key: str = TemplateKey) -> dict[str, Any]:
    """Create or replace a Liquid template."""
    errors = [{"field": name, "message": err} for name in ("subject", "html", "text")
              if (err := check_syntax(getattr(body, name)))]
    if errors:
        raise Problem(400, "Invalid template", errors[0]["message"], errors=errors)
    if body.channel == "email" and not (body.html or body.text):
        raise Problem(400, "Invalid template", "an email template needs html or text",
                      errors=[{"field": "text", "message": "html or text is required"}])
    values = body.model_dump()
    stmt = insert(templates).values(workspace_id=principal.workspace_id, key=key, **values)
    stmt = stmt.on_conflict_do_update(index_elements=[templates.c.workspace_id, templates.c.key],
                                      set_={**values, "updated_at": func.now()})
    async with request.app.state.runtime.engine.begin() as conn:
        row = (await conn.execute(stmt.returning(templates))).mappings().one()
    return _template_out(row)


@router.get("/templates")
async def list_templates(request: Request, principal: AdminDep) -> dict[str, Any]:
    """All templates of the workspace."""
    async with request.app.state.runtime.engine.connect() as conn:
        rows = (await conn.execute(select(templates).where(
            templates.c.workspace_id == principal.workspace_id).order_by(templates.c.key)
        )).mappings().all()
    return {"items": [_template_out(r) for r in rows]}


async def _load(request: Request, workspace_id: str, key: str) -> Any:
    async with request.app.state.runtime.engine.connect() as conn:
        row = (await conn.execute(select(templates).where(
            templates.c.workspace_id == workspace_id, templates.c.key == key))).mappings().first()
    if row is None:
        raise Problem(404, "Not found", f"no template '{key}'")
    return row


@router.get("/templates/{key}")
async def get_template(request: Request, principal: AdminDep,
                       key: str = TemplateKey) -> dict[str, Any]:
    """One template."""
    return _template_out(await _load(request, principal.workspace_id, key))


@router.delete("/templates/{key}", status_code=204)
async def delete_template(request: Request, principal: AdminDep, key: str = TemplateKey) -> None:
    """Delete a template; sends that name it fail with a clear reason."""
    async with request.app.state.runtime.engine.begin() as conn:
        await conn.execute(delete(templates).where(
            templates.c.workspace_id == principal.workspace_id, templates.c.key == key))


@router.post("/templates/{key}/preview")
async def preview_template(body: PreviewIn, request: Request, principal: AdminDep,
                           key: str = TemplateKey) -> dict[str, Any]:
    """Render a template with sample data; nothing is sent."""
    row = await _load(request, principal.workspace_id, key)
    try:
        out = render(subject=row["subject"], html=row["html"], text=row["text"],
                     data=body.model_dump())
    except RenderError as exc:
        raise Problem(422, "Cannot render", str(exc)) from exc
    return {"subject": out.subject, "html": out.html, "text": out.text}


@router.get("/messages")
async def list_messages(request: Request, principal: AdminDep, profile_id: str | None = None,
                        status: str | None = None, limit: Limit = 50,
                        offset: Offset = 0) -> dict[str, Any]:
    """The message log, newest first, filtered by profile and status."""
    query = select(messages).where(messages.c.workspace_id == principal.workspace_id)
    if profile_id:
        query = query.where(messages.c.profile_id == profile_id)
    if status:
        query = query.where(messages.c.status == status)
    async with request.app.state.runtime.engine.connect() as conn:
        rows = (await conn.execute(query.order_by(messages.c.created_at.desc())
                                   .limit(limit).offset(offset))).mappings().all()
    items = [{"id": r["id"], "profile_id": r["profile_id"], "channel": r["channel"],
              "template": r["template"], "status": r["status"], "error": r["error"],
              "journey": r["journey"], "created_at": r["created_at"]} for r in rows]
    return {"items": items, "limit": limit, "offset": offset}
