"""The console's pure parts, and its API calls checked against the services' OpenAPI."""

from __future__ import annotations

import re
import time

import pytest

from services.console.api import OPTIONAL, ROUTES
from services.console.domain import stagemap
from services.console.domain.words import sentence
from services.console.session import Session, SessionCodec
from shared.settings import Settings

DOCUMENT = {
    "key": "j", "name": "J", "exit_when": [{"event": "Refunded"}],
    "stages": [
        {"key": "bought", "enter": {"event": "Order Completed", "where": {
            "field": "event.properties.total", "op": "gte", "value": 50}}, "steps": [
            {"id": "settle", "wait": "PT2S"},
            {"id": "listen", "wait_for": {"event": "Reviewed", "timeout": "P5D", "then": "thanks",
                                          "else": "nudge"}},
            {"id": "nudge", "split": [{"percent": 50, "next": "thanks"}, {"percent": 50}]},
            {"id": "thanks", "send": {"channel": "email", "template": "t"}}]},
        {"key": "reviewed", "enter": {"segment_entered": "fans"}}]}
STATS = {"entries": 5, "customers": 4, "stages": {"bought": {"active": 3, "completed": 1}},
         "stage_customers": {"bought": {"active": 3}},
         "active_by_step": {"bought": {"settle": 1, "listen": 2}},
         "active_customers_by_step": {"bought": {"settle": 1, "listen": 2}},
         "transitions": [{"from": "bought", "to": "reviewed", "count": 1}],
         "time_in_stage": {"bought": {"count": 1, "p50_s": 7200.0}},
         "sends": {"bought": {"thanks": {"sent": 1}}}, "exits": {}, "goal": None}


def test_stage_map_draws_counts_edges_and_rules() -> None:
    m = stagemap.build(DOCUMENT, STATS)
    bought, reviewed = m.stages
    assert [s.id for s in bought.steps] == ["settle", "listen", "nudge", "thanks"]
    assert {s.id: s.active for s in bought.steps} == {"settle": 1, "listen": 2, "nudge": 0,
                                                     "thanks": 0}
    listen = bought.steps[1]
    assert [(e.label, e.target) for e in listen.edges] == [("on event", "thanks"),
                                                         ("on timeout", "nudge")]
    assert [(e.label, e.target) for e in bought.steps[2].edges] == [("50 %", "thanks"),
                                                                  ("50 %", "")]
    assert bought.steps[0].edges[0].target == "listen"  # implied next step
    assert bought.steps[3].sends == {"sent": 1}
    assert "Order Completed" in bought.entry and "event.properties.total gte 50" in bought.entry
    assert reviewed.entry == "enters segment “fans”" and reviewed.counts == {}
    assert m.transitions == STATS["transitions"] and m.exit_when == ["event “Refunded”"]
    assert stagemap.duration(7200.0) == "2.0 h" and stagemap.duration(None) == "—"


def test_stage_map_without_stats_or_with_unknown_step_kinds() -> None:
    m = stagemap.build({"stages": [{"key": "s", "enter": {}, "steps": [
        {"id": "x", "teleport": {}}]}]}, None)
    assert m.stages[0].steps[0].kind == "step" and m.entries == 0


def test_trace_in_plain_words() -> None:
    assert sentence({"kind": "send", "outcome": "held", "stage": "a", "step": "b",
                     "reason": "quiet hours"}) == "Message: held (at a / b), because quiet hours"
    assert sentence({"kind": "wait", "outcome": "wait", "stage": "a"}) == "Wait (at a)"


def test_session_cookie_is_encrypted_signed_and_expires_when_idle() -> None:
    codec = SessionCodec(b"k" * 32, idle_s=60)
    session = Session.new("tp_admin_secret", now=1000.0)
    cookie = codec.dump(session)
    assert "tp_admin_secret" not in cookie
    assert codec.load(cookie, now=1030.0) == session
    assert codec.load(cookie, now=1061.0) is None  # idle too long
    assert codec.load(cookie[:-4] + "AAAA", now=1030.0) is None  # tampered
    assert SessionCodec(b"x" * 32, idle_s=60).load(cookie, now=1030.0) is None  # other secret
    assert session.csrf_ok(session.csrf) and not session.csrf_ok("nope")
    assert not session.csrf_ok(None)
    assert codec.load(codec.dump(Session.new("k")), now=time.time()) is not None


@pytest.fixture(scope="module")
def openapi() -> dict[str, dict[str, object]]:
    from services.ingest.app import create_app as ingest
    from services.journey.app import create_app as journey
    from services.messaging.app import create_app as messaging
    from services.profile.app import create_app as profile

    settings = Settings()
    return {name: factory(settings).openapi()["paths"] for name, factory in (
        ("ingest", ingest), ("profile", profile), ("journey", journey),
        ("messaging", messaging))}


def _template(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_every_call_the_console_makes_is_in_the_services_openapi(
        openapi: dict[str, dict[str, object]], route: str) -> None:
    service, method, path = ROUTES[route]
    paths = {_template(p): ops for p, ops in openapi[service].items()}
    ops = paths.get(_template(path))
    if route in OPTIONAL and (ops is None or method.lower() not in ops):
        pytest.skip(f"{method} {path} is not on {service} yet (the page says so)")
    assert ops is not None, f"{service} has no {path}"
    assert method.lower() in ops, f"{service} has no {method} {path}"  # type: ignore[operator]


def test_journey_list_offers_stats_in_one_call(openapi: dict[str, dict[str, object]]) -> None:
    params = openapi["journey"]["/v1/journeys"]["get"]["parameters"]  # type: ignore[index]
    assert any(p["name"] == "include" for p in params)


def _render(name: str, **context: object) -> str:
    from services.console.web import templates

    base = {"session": object(), "csrf": "t", "path": "/", "request": None}
    return templates.env.get_template(name).render(**(base | context))


def test_pages_of_apis_landing_later_render_their_contract_shapes() -> None:
    # /v1/kpis (issue 15's public names) and /v1/broadcasts (issue 16's).
    kpis = {"window": {"from": "2026-11-01", "to": "2026-11-30"},
            "totals": {"revenue": {"total": 1234.5, "orders": 10},
                       "messages": {"sent": 3, "open_rate": 0.5}},
            "series": [{"start": "2026-11-01", "revenue": {"total": 1.0}},
                       {"start": "2026-11-02", "revenue": {"total": 2.5}}], "by": {}}
    page = _render("kpis.html", data=kpis, params={"interval": "day", "from": "", "to": ""},
                   problem=None)
    assert "1234.5" in page and 'id="kpi-data"' in page and "Open rate" not in page
    listing = _render("broadcasts.html", items=[{
        "key": "sale", "name": "<i>Sale</i>", "segment": "vip", "template": "sale",
        "status": "sending", "counts": {"sent": 5, "suppressed": 1}}])
    assert "&lt;i&gt;Sale&lt;/i&gt;" in listing and "sent 5 · suppressed 1" in listing
    audience = _render("_audience.html", out={
        "recipients": 42, "suppressed": {"no_consent": 3},
        "sample": [{"profile_id": "p1", "email": "a@example.com"}],
        "suppressed_sample": [{"profile_id": "p2", "reason": "cap"}]})
    assert 'id="audience-recipients">42<' in audience and "no consent 3" in audience
    assert 'href="/customers/p1"' in audience and "(cap)" in audience


def test_flow_graph_of_a_stage() -> None:
    bought = stagemap.build(DOCUMENT, STATS).stages[0]
    graph = stagemap.flow_graph(bought)
    assert [n["id"] for n in graph["nodes"]] == ["settle", "listen", "nudge", "thanks", "(end)"]
    assert {(e["from"], e["to"], e["label"]) for e in graph["edges"]} == {
        ("settle", "listen", ""), ("listen", "thanks", "on event"),
        ("listen", "nudge", "on timeout"), ("nudge", "thanks", "50 %"),
        ("nudge", "(end)", "50 %"), ("thanks", "(end)", "")}
    assert graph["nodes"][1]["active"] == 2


def test_moves_between_stages_that_are_not_neighbours_are_drawn_as_arcs() -> None:
    order = ["a", "b", "c", "d"]
    moves = [{"from": "a", "to": "b", "count": 9}, {"from": "a", "to": "c", "count": 4},
             {"from": "b", "to": "d", "count": 2}, {"from": "a", "to": "d", "count": 1},
             {"from": "c", "to": "a", "count": 3}, {"from": "x", "to": "a", "count": 5}]
    arcs = {(a.source, a.target): a for a in stagemap.arcs(order, moves)}
    # a -> b is the arrow between neighbours; a move from an unknown stage is not drawn.
    assert set(arcs) == {("a", "c"), ("b", "d"), ("a", "d"), ("c", "a")}
    a_c, b_d, a_d, c_a = arcs["a", "c"], arcs["b", "d"], arcs["a", "d"], arcs["c", "a"]
    # Grid columns: stage i at 2i+1, the arrow after it at 2i+2; an arc spans the arrows.
    assert (a_c.start, a_c.end, a_c.above) == (2, 5, True)
    assert (b_d.start, b_d.end) == (4, 7) and (a_d.start, a_d.end) == (2, 7)
    assert (c_a.above, c_a.start, c_a.end, c_a.level) == (False, 2, 5, 0)
    # Overlapping arcs go on separate levels, the shortest nearest the stages.
    assert a_c.level == 0 and b_d.level == 1 and a_d.level == 2

    stats = {"transitions": moves[:5], "stages": {}}
    document = {"stages": [{"key": k, "enter": {"event": k}} for k in order]}
    m = stagemap.build(document, stats)
    assert m.levels_above == 3 and m.levels_below == 1 and m.adjacent("a", "b") == 9
    page = _render("_stagemap.html", map=m, duration=stagemap.duration,
                   flow_graph=stagemap.flow_graph)
    drawn = {(f, t): int(n) for f, t, n in re.findall(
        r'<span class="move" data-from="(\w)" data-to="(\w)">(\d+)<', page)}
    assert drawn == {("a", "b"): 9, ("b", "c"): 0, ("c", "d"): 0, ("a", "c"): 4,
                     ("b", "d"): 2, ("a", "d"): 1, ("c", "a"): 3}
    # Stages in row 4 (three levels of arcs above), the move back under them in row 5.
    assert 'data-stage="a" data-active="0" style="grid-column: 1; grid-row: 4"' in page
    assert re.search(r'data-from="c" data-to="a"\s+style="grid-column: 2 / 5; grid-row: 5"',
                     page)
