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
    # Messages and journey runs keep the id they were made under: ask for every merged id.
    ids = [pid, *(profile.get("merged_ids") or [])[:20]]
    events, *per_id = await asyncio.gather(
        a.call(key, "profiles.events", id=pid, params={"limit": 50}),
        *(a.call(key, "messages.list", params={"profile_id": i, "limit": 50}) for i in ids),
        *(a.call(key, "profile.journeys", id=i) for i in ids))
    messages = sorted((m for found in per_id[:len(ids)] for m in found.get("items", [])),
                      key=lambda m: m.get("created_at") or "", reverse=True)[:50]
    runs = [dict(r, profile_id=i) for i, found in zip(ids, per_id[len(ids):], strict=True)
            for r in found.get("items", [])]
    runs.sort(key=lambda r: (r["journey"], str(r.get("entered_at") or "")))
    pairs = sorted({(r["profile_id"], r["journey"]) for r in runs})
    traces = await asyncio.gather(*(
        _optional(a.call(key, "profile.trace", id=i, key=k, params={"limit": 200}))
        for i, k in pairs))
    why: dict[str, list[tuple[dict[str, Any], str]]] = {}
    for (_i, k), tr in zip(pairs, traces, strict=True):
        why.setdefault(k, []).extend((t, sentence(t)) for t in (tr or {}).get("trace", []))
    for entries in why.values():
        entries.sort(key=lambda e: str(e[0].get("at") or ""))
    return render(request, "customer.html", {
        "p": profile, "events": events.get("items", []), "messages": messages,
        "runs": runs, "why": why})


@router.get("/customers/{profile_id}/messages/{message_id}", response_class=HTMLResponse)
async def message_fragment(request: Request, profile_id: str, message_id: str,
                           session: SessionDep) -> Response:
    """One message's rendered content (htmx fragment; HTML in a sandboxed iframe)."""
    message = await api(request).call(session.key, "messages.get", id=message_id)
    return render(request, "_message.html", {"m": message})
