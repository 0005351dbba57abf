"""/broadcasts: list, audience preview, send and cancel, when journey serves broadcasts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from services.console.api import ApiProblem
from services.console.web import SessionDep, api, check_csrf, redirect, render

router = APIRouter()


def _unavailable(request: Request) -> Response:
    return render(request, "unavailable.html", {
        "what": "Broadcasts", "route": "GET /v1/broadcasts (journey)"})


@router.get("/broadcasts", response_class=HTMLResponse)
async def broadcasts_page(request: Request, session: SessionDep) -> Response:
    """Every broadcast with its status and progress."""
    try:
        found = await api(request).call(session.key, "broadcasts.list")
    except ApiProblem as exc:
        if exc.status != 404:
            raise
        return _unavailable(request)
    return render(request, "broadcasts.html", {"items": found.get("items", [])})


@router.post("/broadcasts/{key}/preview", response_class=HTMLResponse)
async def preview(request: Request, key: str, session: SessionDep,
                  csrf: Annotated[str, Form(max_length=100)] = "") -> Response:
    """The audience preview fragment: how many, and a sample."""
    check_csrf(session, csrf)
    try:
        out = await api(request).call(session.key, "broadcasts.preview", key=key)
    except ApiProblem as exc:
        return render(request, "_problem.html", {"title": exc.title, "detail": exc.detail,
                                                 "errors": exc.errors})
    return render(request, "_audience.html", {"out": out})


@router.post("/broadcasts/{key}/{action}", response_class=HTMLResponse)
async def act(request: Request, key: str, action: str, session: SessionDep,
              csrf: Annotated[str, Form(max_length=100)] = "") -> Response:
    """Send or cancel a broadcast."""
    check_csrf(session, csrf)
    if action not in ("send", "cancel"):
        return render(request, "error.html", {"status": 404, "title": "Not found",
                                              "detail": f"no action “{action}”"}, 404)
    await api(request).call(session.key, f"broadcasts.{action}", key=key)
    return redirect(request, "/broadcasts")
