"""The live dashboard of `touchpoint demo`: per playbook its journey stats and the messages
messaging sent, the mail catcher's count, and profile's KPIs where they exist."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table

from touchpoint.client import ApiError, Client, ClientError
from touchpoint.playbooks import names


def mail_count(mail_dir: str | None) -> int | None:
    if not mail_dir or not Path(mail_dir).is_dir():
        return None
    return sum(1 for _ in Path(mail_dir).glob("*.eml"))


def snapshot(client: Client) -> dict[str, Any]:
    """What the dashboard shows: per playbook, its journey stats and sent messages; KPIs."""
    rows = {}
    for key in names():
        try:
            stats = client.journey_stats(key)
            sent = client.items(client.call("messaging", "GET", "/v1/messages", params={
                "journey": key, "status": "sent", "limit": 500}))
        except ApiError:
            continue
        rows[key] = {"entries": stats.get("entries", 0),
                     "stages": {stage: sum(by.get(s, 0) for s in ("active",))
                                for stage, by in (stats.get("stage_customers") or {}).items()},
                     "decided": sum(outcomes.get("sent", 0)
                                    for steps in (stats.get("sends") or {}).values()
                                    for outcomes in steps.values()),
                     "sent": len(sent)}
    return {"playbooks": rows, "kpis": None}


def kpis(client: Client) -> list[tuple[str, float]] | None:
    """Profile's `GET /v1/kpis` as (name, number) pairs; None where the route does not
    answer (not every stack has it yet: the dashboard leaves it out)."""
    try:
        body = client.call("profile", "GET", "/v1/kpis")
    except ClientError:
        return None
    return flat_numbers(body)[:10]


def flat_numbers(body: Any, prefix: str = "") -> list[tuple[str, float]]:
    """Numbers in a JSON answer, named by their path: `{"a": {"b": 1}}` -> [("a.b", 1)];
    a list of `{"name", "value"}` items reads as names."""
    out: list[tuple[str, float]] = []
    if isinstance(body, dict):
        if isinstance(body.get("name"), str) and isinstance(body.get("value"), int | float):
            return [(prefix + body["name"], body["value"])]
        for key, value in body.items():
            if isinstance(value, bool):
                continue
            if isinstance(value, int | float):
                out.append((prefix + str(key), value))
            elif isinstance(value, dict | list):
                out += flat_numbers(value, f"{prefix}{key}.")
    elif isinstance(body, list):
        for item in body:
            out += flat_numbers(item, prefix)
    return out


def dashboard(state: dict[str, Any], header: str, mail: int | None) -> Group:
    table = Table("playbook", "entries", "active by stage", "send decisions", "sent",
                  box=box.SIMPLE_HEAVY, title=header, title_justify="left")
    for key, row in state["playbooks"].items():
        stages = "  ".join(f"{s}:{n}" for s, n in row["stages"].items() if n) or "-"
        table.add_row(key, str(row["entries"]), stages, str(row["decided"]),
                      f"{row['sent']}{'+' if row['sent'] >= 500 else ''}")
    parts: list[Any] = [table]
    if mail is not None:
        parts.append(f"mail catcher: {mail} emails this run")
    if state.get("kpis"):
        kpi = Table("KPI", "value", box=box.SIMPLE, title="GET /v1/kpis", title_justify="left")
        for k, v in state["kpis"]:
            kpi.add_row(k, f"{v:g}")
        parts.append(kpi)
    return Group(*parts)
