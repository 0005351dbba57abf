"""`touchpoint report` (the window's KPIs as tables, or --json) and `touchpoint kpis rebuild`."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from touchpoint.client import ClientError
from touchpoint.commands.common import AdminKey, Url, api_client, fail

app = typer.Typer(no_args_is_help=True, help="The KPI system (profile service).")
GROUPS = ("base", "communication", "sales", "attribution", "nps")


def _flat(group: dict[str, Any] | None, prefix: str = "") -> list[tuple[str, Any]]:
    """A group's figures as (name, value) rows; nested objects as `a.b`."""
    rows: list[tuple[str, Any]] = []
    for name, value in (group or {}).items():
        if isinstance(value, dict):
            rows += _flat(value, f"{prefix}{name}.")
        elif not isinstance(value, list):
            rows.append((f"{prefix}{name}", value))
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1 else f"{value:,.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def report_tables(answer: dict[str, Any]) -> list[Table]:
    """Totals per group, the series of the headline figures, and attribution by journey."""
    w = answer["window"]
    title = f"KPIs {w['from']} .. {w['to']} ({w['timezone']})"
    totals = Table(title=title, box=box.SIMPLE_HEAD)
    totals.add_column("group")
    totals.add_column("figure")
    totals.add_column("value", justify="right")
    for group in (*GROUPS, "lifecycle", "value", "retention"):
        for name, value in _flat(answer["totals"].get(group)):
            totals.add_row(group, name, _cell(value))
    series = Table(title=f"per {w['interval']}", box=box.SIMPLE_HEAD)
    heads = [("communication", "sent"), ("communication", "open_rate"),
             ("communication", "click_rate"), ("sales", "orders"), ("sales", "revenue"),
             ("attribution", "revenue"), ("nps", "score")]
    series.add_column("start")
    for group, name in heads:
        series.add_column(f"{group[:5]}.{name}", justify="right")
    for entry in answer["series"]:
        series.add_row(entry["start"], *(_cell((entry.get(g) or {}).get(n)) for g, n in heads))
    by = Table(title="by journey", box=box.SIMPLE_HEAD)
    for name in ("journey", "sent", "unique_clicks", "orders", "revenue"):
        by.add_column(name, justify="left" if name == "journey" else "right")
    for key, figures in sorted(answer["by"].get("journey", {}).items()):
        c, a = figures["communication"], figures["attribution"]
        by.add_row(key, _cell(c["sent"]), _cell(c["unique_clicks"]), _cell(a["orders"]),
                   _cell(a["revenue"]))
    return [totals, series, by]


def report(
    from_: Annotated[str | None, typer.Option("--from", help="First day (YYYY-MM-DD).")] = None,
    to: Annotated[str | None, typer.Option(help="Last day, inclusive (YYYY-MM-DD).")] = None,
    interval: Annotated[str, typer.Option(help="day, week or month.")] = "day",
    as_json: Annotated[bool, typer.Option("--json", help="The raw answer as JSON.")] = False,
    url: Url = None, admin_key: AdminKey = None,
) -> None:
    """The KPIs of a window (default: the last 30 days) from GET /v1/kpis."""
    params = {k: v for k, v in (("from", from_), ("to", to), ("interval", interval)) if v}
    try:
        answer = api_client(url=("profile", url), admin_key=admin_key).call(
            "profile", "GET", "/v1/kpis", params=params)
    except ClientError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
        return
    console = Console()
    for table in report_tables(answer):
        console.print(table)
    for warning in answer.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}")


@app.command()
def rebuild(url: Url = None, admin_key: AdminKey = None,
            wait: Annotated[bool, typer.Option(help="Follow it until it ends.")] = True) -> None:
    """Recompute the event-based KPI rollups from profile's stored history."""
    try:
        client = api_client(url=("profile", url), admin_key=admin_key)
        run = client.call("profile", "POST", "/v1/kpis/rebuild")
        while wait and run["status"] == "running":
            time.sleep(1)
            run = client.call("profile", "GET", f"/v1/kpis/rebuild/{run['id']}")
    except ClientError as exc:
        fail(str(exc))
    typer.echo(f"rebuild {run['id']}: {run['status']} ({run['events_done']}/"
               f"{run['events_total']} events)")
    if run["status"] == "failed":
        fail(run.get("error") or "rebuild failed")
