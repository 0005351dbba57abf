"""/journeys and /journeys/{key}: the list, the stage map with live counts, the draft editor,
simulation and publish/pause/resume."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response

from services.console.api import ApiProblem
from services.console.domain import stagemap
from services.console.web import SessionDep, api, check_csrf, redirect, render
from shared.auth import hash_key

router = APIRouter()
Version = Annotated[int | None, Query(ge=1, le=1_000_000)]
_DOC_CACHE_MAX = 500


@router.get("/journeys", response_class=HTMLResponse)
async def journeys_page(request: Request, session: SessionDep) -> Response:
    """Every journey with status, version and counts (one API call)."""
    body = await api(request).call(session.key, "journeys.list", params={"include": "stats"})
    return render(request, "journeys.html", {"journeys": body.get("items", [])})


async def _document(request: Request, key: str, journey: dict[str, Any],
                    version: int | None) -> tuple[dict[str, Any] | None, int | None]:
    """The document drawn: the asked version, else the live one, else the draft.
    Published versions never change, so they are cached."""
    wanted = version or journey.get("published_version")
    if wanted is None:
        return journey.get("draft"), None
    cache: dict[tuple[str, str, int], dict[str, Any]] = request.app.state.doc_cache
    # Per workspace (the key's hash stands for it): never the key itself in memory twice.
    ckey = (hash_key(request.state.session.key), key, int(wanted))
    if ckey not in cache:
        found = await api(request).call(request.state.session.key, "journeys.version",
                                        key=key, version=wanted)
        if len(cache) >= _DOC_CACHE_MAX:
            cache.clear()
        cache[ckey] = found["document"]
    return cache[ckey], int(wanted)


async def _map(request: Request, key: str, version: int | None) -> dict[str, Any]:
    session = request.state.session
    journey, stats = await asyncio.gather(
        api(request).call(session.key, "journeys.get", key=key),
        api(request).call(session.key, "journeys.stats", key=key,
                          params={"version": version}))
    document, shown = await _document(request, key, journey, version)
    return {"journey": journey, "document": document or {}, "shown": shown,
            "version": version, "map": stagemap.build(document or {}, stats), "stats": stats,
            "duration": stagemap.duration, "flow_graph": stagemap.flow_graph}


@router.get("/journeys/{key}", response_class=HTMLResponse)
async def journey_page(request: Request, key: str, session: SessionDep,
                       version: Version = None) -> Response:
    """One journey as its stage map, with the editor, simulation and lifecycle buttons."""
    ctx = await _map(request, key, version)
    draft = ctx["journey"].get("draft") or ctx["document"]
    return render(request, "journey.html", ctx | {
        "editor": json.dumps(draft, indent=2), "errors": [], "problem": None,
        "sim_profile": json.dumps({"profile_id": "preview", "traits": {}}, indent=2),
        "sim_events": "[]"})


@router.get("/journeys/{key}/live", response_class=HTMLResponse)
async def journey_live(request: Request, key: str, session: SessionDep,
                       version: Version = None) -> Response:
    """The stage map fragment htmx refreshes every 5 s."""
    return render(request, "_stagemap.html", await _map(request, key, version))


def parse_text(text: str) -> Any:
    """JSON or YAML (YAML is a superset of JSON); a ValueError names the line."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"neither JSON nor YAML{where}") from None


async def submit_document(
        document: str, what: str, field: str,
        submit: Callable[[dict[str, Any]], Awaitable[object]],
) -> tuple[list[dict[str, Any]], ApiProblem | None]:
    """Parse an edited JSON/YAML object (`what` names it in the error) and `submit` it: the
    errors at their path (a parse error, else the API's, else one at `field`) and the API's
    problem; no errors when it was accepted."""
    try:
        body = parse_text(document)
        if not isinstance(body, dict):
            raise ValueError(f"the {what} must be an object")
        await submit(body)
    except ValueError as exc:
        return [{"field": "document", "message": str(exc)}], None
    except ApiProblem as exc:
        return exc.errors or [{"field": field, "message": exc.detail or exc.title}], exc
    return [], None


@router.post("/journeys/{key}/draft", response_class=HTMLResponse)
async def save_draft(request: Request, key: str, session: SessionDep,
                     document: Annotated[str, Form(max_length=512 * 1024)] = "",
                     csrf: Annotated[str, Form(max_length=100)] = "") -> Response:
    """Validate the edited document (errors at their path) and save it as the draft."""
    check_csrf(session, csrf)

    async def save(body: dict[str, Any]) -> None:
        if body.get("key") != key:
            raise ValueError(f"key must stay “{key}”")
        await api(request).call(session.key, "journeys.validate", json=body)
        await api(request).call(session.key, "journeys.save", json=body)

    errors, problem = await submit_document(document, "document", "document", save)
    if not errors:
        return redirect(request, f"/journeys/{key}")
    ctx = await _map(request, key, None)
    return render(request, "journey.html", ctx | {
        "editor": document, "errors": errors, "problem": problem,
        "sim_profile": json.dumps({"profile_id": "preview", "traits": {}}, indent=2),
        "sim_events": "[]"}, status_code=400)


@router.post("/journeys/{key}/simulate", response_class=HTMLResponse)
async def simulate(request: Request, key: str, session: SessionDep,
                   profile: Annotated[str, Form(max_length=64 * 1024)] = "{}",
                   events: Annotated[str, Form(max_length=256 * 1024)] = "[]",
                   customer: Annotated[str, Form(max_length=36)] = "",
                   csrf: Annotated[str, Form(max_length=100)] = "") -> Response:
    """Run the draft (else the live version) on virtual time: the trace fragment. With a
    customer id, their real snapshot is the profile."""
    check_csrf(session, csrf)
    try:
        snapshot = (await api(request).call(session.key, "profiles.snapshot",
                                            id=customer.strip())
                    if customer.strip() else parse_text(profile))
        body = {"profile": snapshot, "events": parse_text(events) or []}
        result = await api(request).call(session.key, "journeys.simulate", key=key, json=body)
    except ValueError as exc:
        return render(request, "_problem.html", {"title": "Cannot read the input",
                                                 "detail": str(exc), "errors": []},
                      status_code=400)
    except ApiProblem as exc:
        return render(request, "_problem.html", {"title": exc.title, "detail": exc.detail,
                                                 "errors": exc.errors}, status_code=exc.status)
    return render(request, "_simulation.html", {"result": result})


@router.post("/journeys/{key}/{action}", response_class=HTMLResponse)
async def lifecycle(request: Request, key: str, action: str, session: SessionDep,
                    csrf: Annotated[str, Form(max_length=100)] = "") -> Response:
    """Publish the draft, pause or resume."""
    check_csrf(session, csrf)
    if action not in ("publish", "pause", "resume"):
        return render(request, "error.html", {"status": 404, "title": "Not found",
                                              "detail": f"no action “{action}”"}, 404)
    await api(request).call(session.key, f"journeys.{action}", key=key)
    return redirect(request, f"/journeys/{key}")
