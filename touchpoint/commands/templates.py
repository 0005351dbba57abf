"""`touchpoint templates preview|test-send`: see a template rendered, or send it to yourself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from touchpoint.client import ApiError, ClientError
from touchpoint.commands.common import AdminKey, Url, api_client, fail

app = typer.Typer(no_args_is_help=True, help="Message templates (messaging service).")

Data = Annotated[str | None, typer.Option(
    help="JSON object, or @file.json", show_default=False)]


def _object(value: str | None, name: str) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        text = Path(value[1:]).read_text() if value.startswith("@") else value
        parsed = json.loads(text)
    except OSError as exc:
        fail(f"--{name}: cannot read {value[1:]}: {exc.strerror}")
    except json.JSONDecodeError as exc:
        fail(f"--{name} is not valid JSON: {exc}")
    if not isinstance(parsed, dict):
        fail(f"--{name} must be a JSON object")
    return parsed


def _api_failure(exc: ClientError) -> None:
    lines = [str(exc).splitlines()[0]] if isinstance(exc, ApiError) and exc.errors else [str(exc)]
    if isinstance(exc, ApiError):
        lines += [f"  {e.get('field', '?')}: {e.get('message', '')}"
                  + (f" (line {e['line']}, column {e['column']})" if "line" in e else "")
                  for e in exc.errors]
    fail("\n".join(lines))


@app.command()
def preview(key: str, profile: Data = None, event: Data = None, url: Url = None,
            admin_key: AdminKey = None) -> None:
    """Render a template with sample data; nothing is sent, no code is handed out."""
    body = {"profile": _object(profile, "profile") or {}, "event": _object(event, "event") or {}}
    try:
        with api_client(url=("messaging", url), admin_key=admin_key) as client:
            out = client.call("messaging", "POST", f"/v1/templates/{key}/preview", json=body)
    except ClientError as exc:
        _api_failure(exc)
    console = Console()
    for part in ("subject", "text", "html"):
        if out.get(part) is not None:
            console.rule(part, style="dim")
            console.print(escape(out[part]), highlight=False)
    for u in out.get("undefined", []):
        console.print(f"[yellow]undefined[/] {escape(u['name'])} ({u.get('part', '?')}, "
                      f"line {u['line']}, column {u['column']})", highlight=False)


@app.command("test-send")
def test_send(key: str, to: Annotated[str, typer.Option(help="Your address: email, phone, "
                                                             "push token or URL.")],
              profile: Data = None, event: Data = None, url: Url = None,
              admin_key: AdminKey = None) -> None:
    """Send a template to yourself through the real provider (marked test: not in KPIs)."""
    body: dict[str, Any] = {"to": to, "event": _object(event, "event") or {}}
    if (snapshot := _object(profile, "profile")) is not None:
        body["profile"] = snapshot
    try:
        with api_client(url=("messaging", url), admin_key=admin_key) as client:
            out = client.call("messaging", "POST", f"/v1/templates/{key}/test-send", json=body)
    except ClientError as exc:
        _api_failure(exc)
    line = f"{out['status']}: message {out['message_id']} (version {out['template_version']})"
    if out.get("reason"):
        line += f": {out['reason']}"
    Console().print(escape(line), highlight=False)
    if out["status"] != "sent":
        raise typer.Exit(1)
