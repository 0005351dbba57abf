"""/segments: each segment's definition, member count and a sample of its members."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from services.console.domain.stagemap import describe_condition
from services.console.web import SessionDep, api, render

router = APIRouter()


@router.get("/segments", response_class=HTMLResponse)
async def segments_page(request: Request, session: SessionDep) -> Response:
    """Every segment of the workspace."""
    found = await api(request).call(session.key, "segments.list", params={"limit": 200})
    return render(request, "segments.html", {"items": found.get("items", [])})


@router.get("/segments/{key}", response_class=HTMLResponse)
async def segment_page(request: Request, key: str, session: SessionDep) -> Response:
    """One segment: its rule, how many are in it, and a sample of members."""
    a = api(request)
    segment, members = await asyncio.gather(
        a.call(session.key, "segments.get", key=key),
        a.call(session.key, "segments.members", key=key, params={"limit": 25}))
    return render(request, "segment.html", {"s": segment, "members": members.get("items", []),
                                            "rule": describe_condition(segment.get("rule"))})
