"""/kpis: profile's KPI dashboard (GET /v1/kpis) when the stack has it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from services.console.api import ApiProblem
from services.console.web import SessionDep, api, render

router = APIRouter()
Filter = Annotated[str, Query(max_length=100)]


@router.get("/kpis", response_class=HTMLResponse)
async def kpis_page(request: Request, session: SessionDep, interval: Filter = "day",
                    from_: Annotated[str, Query(alias="from", max_length=10)] = "",
                    to: Annotated[str, Query(max_length=10)] = "",
                    journey: Filter = "", channel: Filter = "", template: Filter = "",
                    broadcast: Filter = "", segment: Filter = "") -> Response:
    """KPI charts per interval with filters; a clear panel when the API is not there."""
    params = {"interval": interval, "from": from_, "to": to, "journey": journey,
              "channel": channel, "template": template, "broadcast": broadcast,
              "segment": segment}
    try:
        data = await api(request).call(session.key, "kpis", params=params)
    except ApiProblem as exc:
        if exc.status == 400:  # a bad filter: the form again, with the API's problem
            return render(request, "kpis.html", {"data": {}, "params": params, "problem": exc},
                          status_code=400)
        if exc.status != 404:
            raise
        return render(request, "unavailable.html", {
            "what": "KPIs", "route": "GET /v1/kpis (profile)"})
    return render(request, "kpis.html", {"data": data, "params": params, "problem": None})
