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
class StageMap:
    stages: list[StageBox]
    transitions: list[dict[str, Any]]
    entries: int
    customers: int
    exits: dict[str, int]
    goal: dict[str, Any] | None
    exit_when: list[str]


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
    return StageMap(
        stages=stages, transitions=list(stats.get("transitions") or []),
        entries=int(stats.get("entries") or 0), customers=int(stats.get("customers") or 0),
        exits=dict(stats.get("exits") or {}), goal=stats.get("goal"),
        exit_when=[describe_rule(r) for r in document.get("exit_when") or []])


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
