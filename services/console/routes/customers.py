"""/customers (search) and /customers/{id}: everything about one customer, and why."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from services.console.api import ApiProblem
from services.console.domain.words import sentence
from services.console.web import SessionDep, api, render

router = APIRouter()


@router.get("/customers", response_class=HTMLResponse)
async def customers_page(request: Request, session: SessionDep,
                         q: Annotated[str, Query(max_length=100)] = "") -> Response:
    """Search by email, phone, user id or name."""
    items: list[dict[str, Any]] = []
    q = q.strip()
    if q:
        found = await api(request).call(session.key, "profiles.search",
                                        params={"q": q, "limit": 50})
        items = found.get("items", [])
    return render(request, "customers.html", {"q": q, "items": items})


async def _optional(call: Any) -> Any:
    try:
        return await call
    except ApiProblem as exc:
        if exc.status == 404:
            return None
        raise


@router.get("/customers/{profile_id}", response_class=HTMLResponse)
async def customer_page(request: Request, profile_id: str, session: SessionDep) -> Response:
    """Traits, metrics, segments, consent, events, messages and the journeys' "why?"."""
    a, key = api(request), session.key
    if len(profile_id) > 36:
        raise ApiProblem(404, {"title": "Not found", "detail": "no such customer"})
    profile = await a.call(key, "profiles.get", id=profile_id)
    pid = profile["id"]  # an id merged away answers with the survivor
    events, messages, runs = await asyncio.gather(
        a.call(key, "profiles.events", id=pid, params={"limit": 50}),
        a.call(key, "messages.list", params={"profile_id": pid, "limit": 50}),
        a.call(key, "profile.journeys", id=pid))
    keys = sorted({r["journey"] for r in runs.get("items", [])})
    traces = await asyncio.gather(*(
        _optional(a.call(key, "profile.trace", id=pid, key=k, params={"limit": 200}))
        for k in keys))
    why = {k: [(t, sentence(t)) for t in (tr or {}).get("trace", [])]
           for k, tr in zip(keys, traces, strict=True)}
    return render(request, "customer.html", {
        "p": profile, "events": events.get("items", []), "messages": messages.get("items", []),
        "runs": runs.get("items", []), "why": why})


@router.get("/customers/{profile_id}/messages/{message_id}", response_class=HTMLResponse)
async def message_fragment(request: Request, profile_id: str, message_id: str,
                           session: SessionDep) -> Response:
    """One message's rendered content (htmx fragment; HTML in a sandboxed iframe)."""
    message = await api(request).call(session.key, "messages.get", id=message_id)
    return render(request, "_message.html", {"m": message})
