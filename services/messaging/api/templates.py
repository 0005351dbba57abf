"""Templates: CRUD and preview."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert

from services.messaging.api.deps import EngineDep, MessagingDep
from services.messaging.domain.render import (
    RenderError,
    check_syntax,
    render,
    template_data,
    with_unsubscribe_footer,
)
from services.messaging.tables import templates
from shared.http.auth import AdminDep
from shared.http.problems import Problem

router = APIRouter(prefix="/v1", tags=["templates"])
TemplateKey = Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_\-.]+$")


class TemplateIn(BaseModel):
    """Liquid sources. Email: `subject` plus `html` and/or `text`; SMS: `text`; push:
    `subject` (title) and `text` (body); webhook: `text` (the JSON body)."""

    model_config = ConfigDict(extra="forbid")
    channel: Literal["email", "sms", "push", "webhook"]
    subject: str | None = Field(None, max_length=1000)
    html: str | None = Field(None, max_length=256 * 1024)
    text: str | None = Field(None, max_length=256 * 1024)
    category: Literal["marketing", "transactional"] = Field(
        "marketing", description="transactional sends ignore unsubscribes (never bounces)")
    topic: str | None = Field(None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_\-.]+$",
                              description="subscription topic: consent `topic:<key>` applies")


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    profile: dict[str, Any] = Field(default_factory=dict, description="sample profile snapshot")
    event: dict[str, Any] = Field(default_factory=dict)
    journey: dict[str, Any] = Field(default_factory=dict)


def _out(row: Any) -> dict[str, Any]:
    return {k: row[k] for k in ("key", "channel", "subject", "html", "text", "category", "topic",
                                "updated_at")}


def _check(body: TemplateIn) -> None:
    errors = [{"field": name, "message": err} for name in ("subject", "html", "text")
              if (err := check_syntax(getattr(body, name)))]
    needs = {"email": ("subject", "html or text", body.subject and (body.html or body.text)),
             "sms": ("text", "text", body.text), "push": ("text", "text", body.text),
             "webhook": ("text", "text", body.text)}[body.channel]
    if not needs[2]:
        errors.append({"field": needs[0], "message": f"a {body.channel} template needs "
                                                     f"{needs[1]}" + (" and a subject"
                                                                      if body.channel == "email"
                                                                      else "")})
    if errors:
        raise Problem(400, "Invalid template", errors[0]["message"], errors=errors)


@router.put("/templates/{key}")
async def put_template(body: TemplateIn, engine: EngineDep, principal: AdminDep,
                       key: str = TemplateKey) -> dict[str, Any]:
    """Create or replace a Liquid template."""
    _check(body)
    values = body.model_dump()
    stmt = insert(templates).values(workspace_id=principal.workspace_id, key=key, **values)
    stmt = stmt.on_conflict_do_update(index_elements=[templates.c.workspace_id, templates.c.key],
                                      set_={**values, "updated_at": func.now()})
    async with engine.begin() as conn:
        row = (await conn.execute(stmt.returning(templates))).mappings().one()
    return _out(row)


@router.get("/templates")
async def list_templates(engine: EngineDep, principal: AdminDep) -> dict[str, Any]:
    """All templates of the workspace."""
    async with engine.connect() as conn:
        rows = (await conn.execute(select(templates).where(
            templates.c.workspace_id == principal.workspace_id).order_by(templates.c.key)
        )).mappings().all()
    return {"items": [_out(r) for r in rows]}


async def _load(engine: EngineDep, workspace_id: str, key: str) -> Any:
    async with engine.connect() as conn:
        row = (await conn.execute(select(templates).where(
            templates.c.workspace_id == workspace_id, templates.c.key == key))).mappings().first()
    if row is None:
        raise Problem(404, "Not found", f"no template '{key}'")
    return row


@router.get("/templates/{key}")
async def get_template(engine: EngineDep, principal: AdminDep,
                       key: str = TemplateKey) -> dict[str, Any]:
    """One template."""
    return _out(await _load(engine, principal.workspace_id, key))


@router.delete("/templates/{key}", status_code=204)
async def delete_template(engine: EngineDep, principal: AdminDep, key: str = TemplateKey) -> None:
    """Delete a template; sends that name it fail with a clear reason."""
    async with engine.begin() as conn:
        result = await conn.execute(delete(templates).where(
            templates.c.workspace_id == principal.workspace_id, templates.c.key == key))
    if result.rowcount == 0:
        raise Problem(404, "Not found", f"no template '{key}'")


@router.post("/templates/{key}/preview")
async def preview_template(body: PreviewIn, engine: EngineDep, m: MessagingDep,
                           principal: AdminDep, key: str = TemplateKey) -> dict[str, Any]:
    """Render a template with a sample profile, event and journey; nothing is sent.
    422 names the missing variable when the data can't render it."""
    row = await _load(engine, principal.workspace_id, key)
    unsubscribe = f"{m.settings.messaging_public_url}/u/preview"
    data = template_data(body.model_dump(), message_id="preview", unsubscribe_url=unsubscribe)
    try:
        out = render(subject=row["subject"], html=row["html"], text=row["text"], data=data)
    except RenderError as exc:
        raise Problem(422, "Cannot render", str(exc)) from exc
    if row["channel"] == "email":
        out = with_unsubscribe_footer(out, url=unsubscribe, sources=(row["html"], row["text"]))
    return {"subject": out.subject, "html": out.html, "text": out.text}
