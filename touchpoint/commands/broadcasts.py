"""`touchpoint broadcasts`: one-off sends to a segment or a condition (journey service)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from touchpoint.client import ClientError, load_documents
from touchpoint.commands.common import AdminKey, AsJson, Url, api_client, fail

app = typer.Typer(no_args_is_help=True, help="Broadcasts: send a template to a segment "
                                             "(journey service).")
KeyArg = Annotated[str, typer.Argument(help="Broadcast key.")]


def _call(url: str | None, admin_key: str | None, method: str, path: str,
          **kwargs: Any) -> Any:
    try:
        with api_client(url=("journey", url), admin_key=admin_key) as client:
            return client.call("journey", method, path, **kwargs)
    except ClientError as exc:
        fail(str(exc))


def _print(body: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(body, indent=2, default=str))
        return
    counts = body.get("counts") or {}
    line = f"broadcast {body['key']}: {body['status']}"
    if counts:
        line += " (" + ", ".join(f"{k} {v}" for k, v in counts.items()
                                 if k != "reasons" and v) + ")"
        if counts.get("reasons"):
            line += "; not sent: " + ", ".join(f"{k} {v}" for k, v in counts["reasons"].items())
    Console().print(line, highlight=False)


@app.command("apply")
def apply(file: Annotated[str, typer.Option("--file", "-f", help="JSON or YAML file, each "
                                                                "document with its `key`.")],
          url: Url = None, admin_key: AdminKey = None) -> None:
    """Create broadcasts or replace their drafts from a file."""
    try:
        documents = load_documents(file)
    except ClientError as exc:
        fail(str(exc))
    for document in documents:
        body = dict(document)
        key = body.pop("key", None)
        if not key:
            fail(f"{file}: every broadcast needs a `key`")
        saved = _call(url, admin_key, "PUT", f"/v1/broadcasts/{key}", json=body)
        Console().print(f"broadcast {saved['key']}: draft saved", highlight=False)


@app.command("list")
def list_(url: Url = None, admin_key: AdminKey = None, as_json: AsJson = False) -> None:
    """The workspace's broadcasts."""
    body = _call(url, admin_key, "GET", "/v1/broadcasts")
    if as_json:
        print(json.dumps(body, indent=2, default=str))
        return
    table = Table("key", "status", "audience", "template", "send at", box=box.SIMPLE_HEAVY)
    for item in body.get("items", []):
        doc = item.get("broadcast") or {}
        table.add_row(item["key"], item["status"], str(doc.get("segment") or "condition"),
                      str(doc.get("template")), str(doc.get("send_at") or "-"))
    Console().print(table if body.get("items") else "no broadcasts yet")


@app.command("preview")
def preview(key: KeyArg, url: Url = None, admin_key: AdminKey = None,
            as_json: AsJson = False) -> None:
    """Who would get it, and who would not and why."""
    body = _call(url, admin_key, "POST", f"/v1/broadcasts/{key}/preview")
    if as_json:
        print(json.dumps(body, indent=2, default=str))
        return
    console = Console()
    console.print(f"recipients: {body['recipients']}", highlight=False)
    for reason, count in sorted(body.get("suppressed", {}).items()):
        console.print(f"not sent ({reason}): {count}", highlight=False)
    if body.get("sample"):
        console.print("sample: " + ", ".join(body["sample"]), highlight=False)


def _status_command(name: str, method: str, suffix: str, doc: str) -> None:
    """`touchpoint broadcasts <name> KEY`: one call, the broadcast's status and counts."""
    def command(key: KeyArg, url: Url = None, admin_key: AdminKey = None,
                as_json: AsJson = False) -> None:
        _print(_call(url, admin_key, method, f"/v1/broadcasts/{key}{suffix}"), as_json)

    command.__doc__ = doc
    app.command(name)(command)


_status_command("show", "GET", "", "A broadcast's status and counts.")
_status_command("send", "POST", "/send", "Send now (or at its send_at); resumes a cancelled one.")
_status_command("cancel", "POST", "/cancel", "Stop sending (`send` resumes it).")


@app.command("why")
def why(profile_id: Annotated[str, typer.Argument(help="Profile id.")], url: Url = None,
        admin_key: AdminKey = None, as_json: AsJson = False) -> None:
    """Why a customer did (or didn't) get each broadcast they were in the audience of."""
    body = _call(url, admin_key, "GET", f"/v1/profiles/{profile_id}/broadcasts")
    if as_json:
        print(json.dumps(body, indent=2, default=str))
        return
    table = Table("broadcast", "status", "why", "due", box=box.SIMPLE_HEAVY)
    for item in body.get("items", []):
        table.add_row(item["broadcast"], item["status"], str(item.get("reason") or ""),
                      str(item.get("due_at") or "")[:16].replace("T", " "))
    Console().print(table if body.get("items") else "in no broadcast's audience")
