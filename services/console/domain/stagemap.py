"""A journey document plus its stats -> the stage map the page draws: stages left to right
with their entry rules and counts, each stage's steps as a small flow (edges labelled with
the branch, split or wait outcome), and the transitions between stages with their counts.

Works on plain dicts (the API's JSON), so a document the console cannot fully parse (a newer
step kind) still draws, with that step shown by its kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STEP_KINDS = ("send", "wait", "wait_until", "wait_for", "branch", "split", "update_profile",
              "webhook", "exit")


@dataclass
class Edge:
    label: str
    target: str  # a step id, or "" for "the stage's flow ends"


@dataclass
class StepBox:
    id: str
    kind: str
    summary: str
    edges: list[Edge]
    active: int = 0
    customers: int = 0
    sends: dict[str, int] = field(default_factory=dict)


@dataclass
class StageBox:
    key: str
    name: str
    entry: str
    steps: list[StepBox]
    counts: dict[str, int]
    customers: dict[str, int]
    idle: int
    time_in_stage: dict[str, Any] | None


@dataclass
class Arc:
    """A move between stages that are not neighbours left to right (or a move back), drawn
    as a curve above (forward) or below (backward) the stages. `start`/`end` are the
    stage-map grid columns it spans, `level` its row counted away from the stages."""
    source: str
    target: str
    count: int
    above: bool
    start: int
    end: int
    level: int = 0


@dataclass
class StageMap:
    stages: list[StageBox]
    transitions: list[dict[str, Any]]
    entries: int
    customers: int
    exits: dict[str, int]
    goal: dict[str, Any] | None
    exit_when: list[str]
    arcs: list[Arc] = field(default_factory=list)

    @property
    def levels_above(self) -> int:
        return max((a.level + 1 for a in self.arcs if a.above), default=0)

    @property
    def levels_below(self) -> int:
        return max((a.level + 1 for a in self.arcs if not a.above), default=0)

    def adjacent(self, source: str, target: str) -> int:
        """The count of the forward move drawn on the arrow between neighbours."""
        return sum(int(t.get("count") or 0) for t in self.transitions
                   if t.get("from") == source and t.get("to") == target)


def describe_rule(rule: dict[str, Any]) -> str:
    """An entry (or exit) rule in words."""
    parts = []
    if rule.get("event"):
        parts.append(f"event “{rule['event']}”")
    for name, words in (("segment_entered", "enters segment"), ("segment_exited",
                        "leaves segment"), ("lifecycle", "becomes lifecycle"),
                        ("rfm_segment", "enters RFM segment")):
        if rule.get(name):
            parts.append(f"{words} “{rule[name]}”")
    text = " or ".join(parts) or "—"
    if rule.get("where"):
        text += f" where {describe_condition(rule['where'])}"
    if rule.get("condition"):
        text += f" if {describe_condition(rule['condition'])}"
    return text


def describe_condition(cond: Any) -> str:
    if not isinstance(cond, dict):
        return str(cond)
    for joiner in ("all", "any"):
        if isinstance(cond.get(joiner), list):
            word = " and " if joiner == "all" else " or "
            return "(" + word.join(describe_condition(c) for c in cond[joiner]) + ")"
    if "not" in cond:
        return f"not {describe_condition(cond['not'])}"
    if "field" in cond:
        value = f" {cond['value']!r}" if "value" in cond else ""
        return f"{cond['field']} {cond.get('op', '=')}{value}"
    return ", ".join(f"{k}={v}" for k, v in cond.items())


def _summary(step: dict[str, Any], kind: str) -> str:
    body = step.get(kind)
    if kind == "send" and isinstance(body, dict):
        return f"send {body.get('channel', '?')} “{body.get('template', '?')}”"
    if kind == "wait":
        return f"wait {body}"
    if kind == "wait_until" and isinstance(body, dict):
        days = ", ".join(body.get("weekdays") or [])
        return f"wait until {body.get('time')}" + (f" on {days}" if days else "")
    if kind == "wait_for" and isinstance(body, dict):
        return f"wait up to {body.get('timeout')} for “{body.get('event')}”"
    if kind == "branch":
        return "branch"
    if kind == "split":
        return "random split"
    if kind == "update_profile" and isinstance(body, dict):
        return "set " + ", ".join(sorted(body))
    if kind == "webhook" and isinstance(body, dict):
        return f"webhook {body.get('url', '')}"
    if kind == "exit":
        return "exit the journey"
    return kind


def _edges(step: dict[str, Any], kind: str, following: str | None) -> list[Edge]:
    body = step.get(kind)
    edges: list[Edge] = []
    if kind == "wait_for" and isinstance(body, dict):
        edges += [Edge("on event", str(body.get("then", ""))),
                  Edge("on timeout", str(body.get("else", "")))]
    elif kind == "branch" and isinstance(body, dict):
        for case in body.get("cases") or []:
            edges.append(Edge(f"if {describe_condition(case.get('when'))}",
                              str(case.get("next", ""))))
        edges.append(Edge("otherwise", str(body.get("default") or step.get("next")
                                           or following or "")))
    elif kind == "split" and isinstance(body, list):
        for path in body:
            edges.append(Edge(f"{path.get('percent')} %", str(path.get("next") or "")))
    elif kind != "exit":
        target = step.get("next") or following or ""
        edges.append(Edge("then", str(target)))
        if kind == "send" and isinstance(body, dict) and body.get("fallback"):
            edges.append(Edge("unreachable", str(body["fallback"])))
    return edges


def build(document: dict[str, Any], stats: dict[str, Any] | None) -> StageMap:
    stats = stats or {}
    by_step = stats.get("active_by_step") or {}
    people_by_step = stats.get("active_customers_by_step") or {}
    sends = stats.get("sends") or {}
    stages = []
    for stage in document.get("stages") or []:
        key = str(stage.get("key", ""))
        raw_steps = stage.get("steps") or []
        boxes = []
        for index, step in enumerate(raw_steps):
            kind = next((k for k in STEP_KINDS if step.get(k) is not None), "step")
            following = (str(raw_steps[index + 1].get("id"))
                         if index + 1 < len(raw_steps) else None)
            sid = str(step.get("id", ""))
            boxes.append(StepBox(
                id=sid, kind=kind, summary=_summary(step, kind),
                edges=_edges(step, kind, following),
                active=int((by_step.get(key) or {}).get(sid, 0)),
                customers=int((people_by_step.get(key) or {}).get(sid, 0)),
                sends=dict((sends.get(key) or {}).get(sid) or {})))
        stages.append(StageBox(
            key=key, name=str(stage.get("name") or key),
            entry=describe_rule(stage.get("enter") or {}), steps=boxes,
            counts=dict((stats.get("stages") or {}).get(key) or {}),
            customers=dict((stats.get("stage_customers") or {}).get(key) or {}),
            idle=int((by_step.get(key) or {}).get("(idle)", 0)),
            time_in_stage=(stats.get("time_in_stage") or {}).get(key)))
    transitions = list(stats.get("transitions") or [])
    return StageMap(
        stages=stages, transitions=transitions, arcs=arcs([s.key for s in stages], transitions),
        entries=int(stats.get("entries") or 0), customers=int(stats.get("customers") or 0),
        exits=dict(stats.get("exits") or {}), goal=stats.get("goal"),
        exit_when=[describe_rule(r) for r in document.get("exit_when") or []])


def arcs(order: list[str], transitions: list[dict[str, Any]]) -> list[Arc]:
    """Moves the arrows between neighbours cannot show, as arcs in grid columns: the map's
    grid has stage i in column 2i+1 and the arrow after it in 2i+2, so an arc from stage a
    to stage b (a < b) spans the arrows' columns 2a+2 .. 2b (above); a move back spans
    2b+2 .. 2a (below). Arcs that would overlap go on separate levels, shorter ones nearer
    the stages."""
    where = {key: i for i, key in enumerate(order)}
    found: list[Arc] = []
    for t in transitions:
        a, b = where.get(str(t.get("from"))), where.get(str(t.get("to")))
        if a is None or b is None or b == a + 1 or a == b:
            continue
        low, high = min(a, b), max(a, b)
        found.append(Arc(source=str(t["from"]), target=str(t["to"]),
                         count=int(t.get("count") or 0), above=b > a,
                         start=2 * low + 2, end=2 * high + 1))
    for above in (True, False):
        taken: list[list[tuple[int, int]]] = []
        for arc in sorted((x for x in found if x.above is above),
                          key=lambda x: (x.end - x.start, x.start)):
            level = next((n for n, spans in enumerate(taken) if all(
                arc.end <= s or arc.start >= e for s, e in spans)), len(taken))
            if level == len(taken):
                taken.append([])
            taken[level].append((arc.start, arc.end))
            arc.level = level
    return found


def flow_graph(stage: StageBox) -> dict[str, Any]:
    """One stage's steps as nodes and labelled edges for the drawn flow (a jump to "" ends
    the stage's flow: an `end` node)."""
    nodes = [{"id": s.id, "kind": s.kind, "label": s.summary, "active": s.active}
             for s in stage.steps]
    edges = [{"from": s.id, "to": e.target or "(end)", "label": "" if e.label == "then"
              else e.label} for s in stage.steps for e in s.edges]
    if any(e["to"] == "(end)" for e in edges):
        nodes.append({"id": "(end)", "kind": "end", "label": "end of stage", "active": None})
    known = {n["id"] for n in nodes}
    return {"nodes": nodes, "edges": [e for e in edges if e["to"] in known]}


def duration(seconds: float | None) -> str:
    """1.5 h, 3 d: time in stage in words."""
    if seconds is None:
        return "—"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"
