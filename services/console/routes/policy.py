"""/policy: the workspace's contact policy (journey's GET/PUT /v1/policy), shown and edited as
JSON or YAML; the API's validation errors are shown at their path."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from services.console.api import ApiProblem
from services.console.routes.journeys import parse_text
from services.console.web import SessionDep, api, check_csrf, redirect, render

router = APIRouter()


@router.get("/policy", response_class=HTMLResponse)
async def policy_page(request: Request, session: SessionDep) -> Response:
    """The contact policy with its editor."""
    found = await api(request).call(session.key, "policy.get")
    return render(request, "policy.html", {
        "found": found, "editor": json.dumps(found.get("policy") or {}, indent=2),
        "errors": [], "problem": None})


@router.post("/policy", response_class=HTMLResponse)
async def save_policy(request: Request, session: SessionDep,
                      document: Annotated[str, Form(max_length=256 * 1024)] = "",
                      csrf: Annotated[str, Form(max_length=100)] = "") -> Response:
    """Replace the policy (PUT /v1/policy); on a problem the edited text stays, with the
    errors at their path."""
    check_csrf(session, csrf)
    errors: list[dict[str, Any]] = []
    problem = None
    try:
        body = parse_text(document)
        if not isinstance(body, dict):
            raise ValueError("the policy must be an object")
        await api(request).call(session.key, "policy.put", json=body)
    except ValueError as exc:
        errors = [{"field": "document", "message": str(exc)}]
    except ApiProblem as exc:
        problem = exc
        errors = exc.errors or [{"field": "policy", "message": exc.detail or exc.title}]
    if not errors:
        return redirect(request, "/policy?saved=1")
    found = await api(request).call(session.key, "policy.get")
    return render(request, "policy.html", {"found": found, "editor": document,
                                           "errors": errors, "problem": problem},
                  status_code=400)
