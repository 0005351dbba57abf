"""/templates: the list, and one template's editor with a live preview against a customer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from services.console.api import ApiProblem
from services.console.web import SessionDep, api, check_csrf, redirect, render

router = APIRouter()
Source = Annotated[str, Form(max_length=256 * 1024)]


@router.get("/templates", response_class=HTMLResponse)
async def templates_list(request: Request, session: SessionDep) -> Response:
    """Every template of the workspace."""
    found = await api(request).call(session.key, "templates.list")
    return render(request, "templates.html", {"items": found.get("items", [])})


@router.get("/templates/{key}", response_class=HTMLResponse)
async def template_page(request: Request, key: str, session: SessionDep) -> Response:
    """One template's editor with its preview."""
    template = await api(request).call(session.key, "templates.get", key=key)
    return render(request, "template.html", {"t": template, "errors": [], "saved": False})


def _fields(channel: str, subject: str, html: str, text: str, category: str,
            topic: str) -> dict[str, Any]:
    return {"channel": channel, "subject": subject or None, "html": html or None,
            "text": text or None, "category": category or "marketing", "topic": topic or None}


@router.post("/templates/{key}", response_class=HTMLResponse)
async def save_template(request: Request, key: str, session: SessionDep,
                        channel: Annotated[str, Form(max_length=20)] = "email",
                        subject: Source = "", html: Source = "", text: Source = "",
                        category: Annotated[str, Form(max_length=20)] = "marketing",
                        topic: Annotated[str, Form(max_length=100)] = "",
                        csrf: Annotated[str, Form(max_length=100)] = "") -> Response:
    """Save the template (the API's problems shown at their field)."""
    check_csrf(session, csrf)
    body = _fields(channel, subject, html, text, category, topic)
    try:
        await api(request).call(session.key, "templates.put", key=key, json=body)
    except ApiProblem as exc:
        errors = exc.errors or [{"field": "template", "message": exc.detail or exc.title}]
        return render(request, "template.html", {"t": body | {"key": key}, "errors": errors,
                                                 "saved": False}, status_code=400)
    return redirect(request, f"/templates/{key}?saved=1")


async def _snapshot(request: Request, admin_key: str, who: str) -> dict[str, Any]:
    """The snapshot of a customer given by id, email or +phone."""
    a = api(request)
    pid = who
    if "@" in who or who.startswith("+"):
        found = await a.call(admin_key, "profiles.lookup",
                             params={"email" if "@" in who else "phone": who})
        pid = found["id"]
    snapshot: dict[str, Any] = await a.call(admin_key, "profiles.snapshot", id=pid)
    return snapshot


@router.post("/templates/{key}/preview", response_class=HTMLResponse)
async def preview(request: Request, key: str, session: SessionDep,
                  customer: Annotated[str, Form(max_length=320)] = "",
                  channel: Annotated[str, Form(max_length=20)] = "email",
                  subject: Source = "", html: Source = "", text: Source = "",
                  category: Annotated[str, Form(max_length=20)] = "marketing",
                  topic: Annotated[str, Form(max_length=100)] = "",
                  csrf: Annotated[str, Form(max_length=100)] = "") -> Response:
    """The preview fragment: the edited (unsaved) sources rendered against a customer's
    snapshot, the one a real send carries, by messaging's inline preview (nothing saved)."""
    check_csrf(session, csrf)
    snapshot: dict[str, Any] = {}
    who = customer.strip()
    body = _fields(channel, subject, html, text, category, topic)
    source = {k: body[k] for k in ("channel", "subject", "html", "text")}
    try:
        if who:
            snapshot = await _snapshot(request, session.key, who)
        out = await api(request).call(session.key, "templates.preview_inline",
                                      json={"template": source, "profile": snapshot})
    except ApiProblem as exc:
        return render(request, "_problem.html", {"title": exc.title, "detail": exc.detail,
                                                 "errors": exc.errors})
    return render(request, "_preview.html", {"out": out, "snapshot": snapshot})


@router.post("/templates/{key}/test-send", response_class=HTMLResponse)
async def test_send(request: Request, key: str, session: SessionDep,
                    to: Annotated[str, Form(min_length=1, max_length=320)],
                    customer: Annotated[str, Form(max_length=320)] = "",
                    csrf: Annotated[str, Form(max_length=100)] = "") -> Response:
    """Send the saved template once to `to` (messaging's test send), rendered with the chosen
    customer's snapshot; the answer or the API's problem as a fragment."""
    check_csrf(session, csrf)
    a = api(request)
    body: dict[str, Any] = {"to": to.strip()}
    try:
        if customer.strip():
            body["profile"] = await _snapshot(request, session.key, customer.strip())
        out = await a.call(session.key, "templates.test_send", key=key, json=body)
    except ApiProblem as exc:
        if exc.status == 404 and not exc.errors:
            return render(request, "_problem.html", {
                "title": "Test send not available",
                "detail": "this stack's messaging has no test-send route, or the template is "
                          "not saved yet", "errors": []})
        return render(request, "_problem.html", {"title": exc.title, "detail": exc.detail,
                                                 "errors": exc.errors})
    return render(request, "_sent.html", {"out": out or {}, "to": body["to"]})
