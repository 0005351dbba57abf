"""/policy: the workspace's contact policy (journey's GET/PUT /v1/policy), shown and edited as
JSON or YAML; the API's validation errors are shown at their path."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from services.console.routes.journeys import submit_document
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

    async def put(body: dict[str, Any]) -> object:
        return await api(request).call(session.key, "policy.put", json=body)

    errors, problem = await submit_document(document, "policy", "policy", put)
    if not errors:
        return redirect(request, "/policy?saved=1")
    found = await api(request).call(session.key, "policy.get")
    return render(request, "policy.html", {"found": found, "editor": document,
                                           "errors": errors, "problem": problem},
                  status_code=400)
