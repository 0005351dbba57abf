"""Templates: CRUD, versions and preview."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from services.messaging.api.deps import EngineDep, MessagingDep, publish
from services.messaging.domain.plain_text import html_to_text
from services.messaging.domain.render import (
    RenderError,
    render,
    template_data,
    with_unsubscribe_footer,
)
from services.messaging.domain.template_check import SAMPLE_PROFILE, check_limits, check_source
from services.messaging.prepare import render_options
from services.messaging.store import templates as template_store
from services.messaging.test_send import test_command, test_send
from shared.contracts.send import ChannelName
from shared.http.auth import AdminDep
from shared.http.contracts import answers
from shared.http.problems import Problem

router = APIRouter(prefix="/v1", tags=["templates"])
TemplateKey = Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_\-.]+$")
PARTS = ("subject", "html", "text")


# What `check_template` asks of each channel, as JSON schema (a source is there when it
# is not empty).
_THERE = {"type": "string", "minLength": 1}
NEEDS_PER_CHANNEL: dict[str, Any] = {"anyOf": [
    {"properties": {"channel": {"const": "email"}, "subject": _THERE}, "required": ["subject"],
     "anyOf": [{"properties": {"html": _THERE}, "required": ["html"]},
               {"properties": {"text": _THERE}, "required": ["text"]}]},
    {"properties": {"channel": {"enum": ["sms", "push", "webhook"]}, "text": _THERE},
     "required": ["text"]}]}


class TemplateIn(BaseModel):
    """Liquid sources. Email: `subject` plus `html` and/or `text`; SMS: `text`; push:
    `subject` (title) and `text` (body); webhook: `text` (the JSON body)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={**NEEDS_PER_CHANNEL,
        "examples": [{"channel": "email", "subject": "Thanks, {{ profile.first_name }}",
                      "html": "<p>Your order is on its way.</p>"}]})
    channel: ChannelName
    subject: str | None = Field(None, max_length=1000)
    html: str | None = Field(None, max_length=256 * 1024)
    text: str | None = Field(None, max_length=256 * 1024)
    category: Literal["marketing", "transactional"] = Field(
        "marketing", description="transactional sends ignore unsubscribes (never bounces)")
    topic: str | None = Field(None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_\-.]+$",
                              description="subscription topic: consent `topic:<key>` applies")
    strict: bool | None = Field(
        None, description="undefined variables fail the send instead of rendering blank; "
                          "omitted: the template's earlier choice, false for a new one")


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"profile": {"traits": {"first_name": "Ada"}},
        "event": {"properties": {"order_id": "o-1"}}}]})
    profile: dict[str, Any] = Field(default_factory=dict, description="sample profile snapshot")
    event: dict[str, Any] = Field(default_factory=dict)
    journey: dict[str, Any] = Field(default_factory=dict)


class InlineTemplateIn(BaseModel):
    """The sources to render (not saved): as `PUT /v1/templates/{key}`'s body."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=NEEDS_PER_CHANNEL)
    channel: Literal["email", "sms", "push", "webhook"]
    subject: str | None = Field(None, max_length=1000)
    html: str | None = Field(None, max_length=256 * 1024)
    text: str | None = Field(None, max_length=256 * 1024)
    strict: bool = Field(False, description="undefined variables fail the render")


class InlinePreviewIn(PreviewIn):
    template: InlineTemplateIn


class TestSendIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"to": "qa@example.com"}]})
    to: str = Field(min_length=3, max_length=4096,
                    description="the tester's address: email, phone, push token or URL")
    profile: dict[str, Any] | None = Field(
        None, description="profile snapshot to render with; omitted: a sample profile")
    event: dict[str, Any] = Field(default_factory=dict)


class TestSendOut(BaseModel):
    message_id: str
    status: str = Field(description="sent, failed, suppressed or bounced")
    reason: str | None
    template_version: int | None


class UndefinedOut(BaseModel):
    name: str
    line: int
    column: int
    part: str


class PreviewOut(BaseModel):
    subject: str | None
    html: str | None
    text: str | None
    undefined: list[UndefinedOut] = Field(
        description="undefined variables met (blank in a lax template), with their place")


class _TemplateParts(BaseModel):
    """What a template and each of its versions hold."""

    channel: str
    subject: str | None
    html: str | None
    text: str | None
    category: str
    topic: str | None
    strict: bool


class TemplateOut(_TemplateParts):
    key: str
    version: int
    updated_at: Any


class TemplateList(BaseModel):
    items: list[TemplateOut]


class VersionOut(_TemplateParts):
    version: int
    created_at: Any


class VersionList(BaseModel):
    items: list[VersionOut]


def _out(row: Any) -> dict[str, Any]:
    return {k: row[k] for k in TemplateOut.model_fields}


def check_template(body: TemplateIn | InlineTemplateIn, snippets: dict[str, str],
                   prefix: str = "") -> None:
    """400 with every problem (field, message, line, column), or nothing; `prefix` is put
    before each field's name (`template.` for an inline preview)."""
    errors = [{"field": name, **problem} for name in PARTS
              for problem in check_source(getattr(body, name), snippets=snippets)]
    needs = {"email": ("subject", "html or text", body.subject and (body.html or body.text)),
             "sms": ("text", "text", body.text), "push": ("text", "text", body.text),
             "webhook": ("text", "text", body.text)}[body.channel]
    if not needs[2]:
        errors.append({"field": needs[0], "message": f"a {body.channel} template needs "
                                                     f"{needs[1]}" + (" and a subject"
                                                                      if body.channel == "email"
                                                                      else "")})
    if not errors and (limit := check_limits(subject=body.subject, html=body.html,
                                             text=body.text, snippets=snippets)):
        errors.append({"field": "html" if body.html else "text", "message": limit})
    for error in errors:
        error["field"] = prefix + error["field"]
    if errors:
        first = errors[0]
        where = f" (line {first['line']}, column {first['column']})" if "line" in first else ""
        raise Problem(400, "Invalid template", f"{first['field']}: {first['message']}{where}",
                      errors=errors)


@router.put("/templates/{key}", response_model=TemplateOut, responses=answers(None))
async def put_template(body: TemplateIn, engine: EngineDep, principal: AdminDep,
                       key: str = TemplateKey) -> dict[str, Any]:
    """Create or replace a Liquid template; every save is a new version."""
    async with engine.begin() as conn:
        snippets = (await template_store.load_snippets(conn, [principal.workspace_id]))[
            principal.workspace_id]
        check_template(body, snippets)
        row = await template_store.save_template(conn, workspace_id=principal.workspace_id,
                                                 key=key, values=body.model_dump())
    return _out(row)


@router.get("/templates", response_model=TemplateList)
async def list_templates(engine: EngineDep, principal: AdminDep) -> dict[str, Any]:
    """All templates of the workspace."""
    async with engine.connect() as conn:
        rows = await template_store.template_rows(conn, principal.workspace_id)
    return {"items": [_out(r) for r in rows]}


async def load_template(engine: EngineDep, workspace_id: str, key: str) -> Any:
    async with engine.connect() as conn:
        row = await template_store.template_row(conn, workspace_id, key)
    if row is None:
        raise Problem(404, "Not found", f"no template '{key}'")
    return row


@router.get("/templates/{key}", response_model=TemplateOut, responses=answers(None, 404))
async def get_template(engine: EngineDep, principal: AdminDep,
                       key: str = TemplateKey) -> dict[str, Any]:
    """One template (its latest version)."""
    return _out(await load_template(engine, principal.workspace_id, key))


@router.get("/templates/{key}/versions", response_model=VersionList,
            responses=answers(None, 404))
async def list_versions(engine: EngineDep, principal: AdminDep,
                        key: str = TemplateKey) -> dict[str, Any]:
    """Every saved version of a template, newest first."""
    async with engine.connect() as conn:
        rows = await template_store.versions(conn, workspace_id=principal.workspace_id, key=key)
    if not rows:
        raise Problem(404, "Not found", f"no template '{key}'")
    return {"items": [{k: r[k] for k in VersionOut.model_fields} for r in rows]}


@router.delete("/templates/{key}", status_code=204, responses=answers(None, 404))
async def delete_template(engine: EngineDep, principal: AdminDep, key: str = TemplateKey) -> None:
    """Delete a template; sends that name it fail with a clear reason."""
    async with engine.begin() as conn:
        deleted = await template_store.delete_template(conn, principal.workspace_id, key)
    if not deleted:
        raise Problem(404, "Not found", f"no template '{key}'")


@router.post("/templates/{key}/test-send", response_model=TestSendOut,
             responses=answers(None, 404))
async def test_send_template(body: TestSendIn, request: Request, engine: EngineDep,
                             m: MessagingDep, principal: AdminDep,
                             key: str = TemplateKey) -> dict[str, Any]:
    """Send a template to a tester through the real provider; events carry `test: true`."""
    row = await load_template(engine, principal.workspace_id, key)
    if row["channel"] == "email" and "@" not in body.to:
        raise Problem(400, "Invalid test send", "to: not an email address",
                      errors=[{"field": "to", "message": "not an email address"}])
    cmd = test_command(workspace_id=principal.workspace_id, template=key,
                       channel=row["channel"], to=body.to,
                       profile=SAMPLE_PROFILE if body.profile is None else body.profile,
                       event=body.event)
    result, rows = await test_send(request.app.state.runtime, m, cmd)
    await publish(request, rows)
    return result


async def _snippets(engine: EngineDep, workspace_id: str) -> dict[str, str]:
    async with engine.connect() as conn:
        return (await template_store.load_snippets(conn, [workspace_id]))[workspace_id]


def _preview(source: Any, body: PreviewIn, m: Any, snippets: dict[str, str]) -> dict[str, Any]:
    """Render `source` (channel, subject, html, text, strict) as a preview: 422 names what
    can't render."""
    unsubscribe = f"{m.settings.messaging_public_url}/u/preview"
    data = template_data(body.model_dump(include={"profile", "event", "journey"}),
                         message_id="preview", unsubscribe_url=unsubscribe)
    try:
        out = render(subject=source["subject"], html=source["html"], text=source["text"],
                     data=data, strict=source["strict"], snippets=snippets,
                     options=render_options(m.settings, body.profile))
    except RenderError as exc:
        raise Problem(422, "Cannot render", str(exc)) from exc
    if source["channel"] == "email":
        if out.html and not source["text"]:
            out = replace(out, text=html_to_text(out.html))
        out = with_unsubscribe_footer(out, url=unsubscribe,
                                      sources=(source["html"], source["text"]))
    return {"subject": out.subject, "html": out.html, "text": out.text,
            "undefined": out.undefined}


@router.post("/templates/preview", response_model=PreviewOut, responses=answers(None, 422))
async def preview_inline(body: InlinePreviewIn, engine: EngineDep, m: MessagingDep,
                         principal: AdminDep) -> dict[str, Any]:
    """Render a template given in the request (not saved) like a saved template's preview;
    400 names a source error, 422 what can't render; no discount code is handed out."""
    snippets = await _snippets(engine, principal.workspace_id)
    check_template(body.template, snippets, prefix="template.")
    return _preview(body.template.model_dump(), body, m, snippets)


@router.post("/templates/{key}/preview", response_model=PreviewOut,
             responses=answers(None, 404, 422))
async def preview_template(body: PreviewIn, engine: EngineDep, m: MessagingDep,
                           principal: AdminDep, key: str = TemplateKey) -> dict[str, Any]:
    """Render a template with a sample profile, event and journey; nothing is sent and no
    discount code is handed out. 422 names what can't render (a strict template's
    missing variable, a render limit)."""
    row = await load_template(engine, principal.workspace_id, key)
    return _preview(row, body, m, await _snippets(engine, principal.workspace_id))
