"""`touchpoint dlq`: inspect and replay dead letters (each service's /v1/dlq, for the
consumers it runs)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shared.settings import SERVICES
from touchpoint.client import Client, ClientError
from touchpoint.commands.common import AdminKey, Url, api_client, fail

app = typer.Typer(no_args_is_help=True, help="Dead letters: list and replay, by consumer, "
                                             "time and error.")
Service = Annotated[str | None, typer.Option(help="The service whose consumers' dead letters "
                                             "to read (default: from --consumer).",
                                             show_default=False)]
Consumer = Annotated[str | None, typer.Option(help="e.g. messaging.send-commands",
                                              show_default=False)]
Since = Annotated[str | None, typer.Option(help="ISO 8601 time with zone, inclusive.",
                                           show_default=False)]
Until = Annotated[str | None, typer.Option(help="ISO 8601 time with zone, exclusive.",
                                           show_default=False)]
Error = Annotated[str | None, typer.Option(help="Substring of the error or its type.",
                                           show_default=False)]


def _service(service: str | None, consumer: str | None) -> str:
    name = service or (consumer.split(".", 1)[0] if consumer else None)
    if name not in SERVICES:
        fail(f"name the service (--service {'|'.join(SERVICES)}) or a consumer "
             "(--consumer <service>.<name>)")
    return name


def _filters(consumer: str | None, since: str | None, until: str | None,
             error: str | None) -> dict[str, Any]:
    return {k: v for k, v in {"consumer": consumer, "since": since, "until": until,
                              "error": error}.items() if v is not None}


def _table(items: list[dict[str, Any]]) -> Table:
    table = Table(box=box.SIMPLE)
    for column in ("dlq", "consumer", "from", "at", "error"):
        table.add_column(column)
    for d in items:
        table.add_row(f"{d['partition']}:{d['offset']}", d["consumer"],
                      f"{d['topic']}[{d['source_partition']}]@{d['source_offset']}",
                      str(d["at"] or ""), escape(f"{d['error_type']}: {d['error']}"[:120]))
    return table


@app.command("list")
def list_(service: Service = None, consumer: Consumer = None, since: Since = None,
          until: Until = None, error: Error = None,
          limit: Annotated[int, typer.Option(min=1, max=500)] = 100,
          url: Url = None, admin_key: AdminKey = None) -> None:
    """Dead letters of a service's consumers, oldest first."""
    name = _service(service, consumer)
    try:
        with api_client(url=(name, url), admin_key=admin_key) as client:
            items = Client.items(client.call(name, "GET", "/v1/dlq", params={
                **_filters(consumer, since, until, error), "limit": limit}))
    except ClientError as exc:
        fail(str(exc))
    Console().print(_table(items) if items else "no dead letters match")


@app.command()
def replay(service: Service = None, consumer: Consumer = None, since: Since = None,
           until: Until = None, error: Error = None,
           record: Annotated[list[str] | None, typer.Option(
               help="Only this DLQ record, as partition:offset (repeatable).",
               show_default=False)] = None,
           limit: Annotated[int, typer.Option(min=1, max=10_000)] = 1000,
           dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list.")] = False,
           yes: Annotated[bool, typer.Option("--yes", "-y", help="Don't ask.")] = False,
           url: Url = None, admin_key: AdminKey = None) -> None:
    """Publish matching dead letters again to the topic they came from. Every consumer of
    that topic reads them again (handlers are idempotent): fix the cause first."""
    name = _service(service, consumer)
    refs = []
    for r in record or []:
        partition, _, offset = r.partition(":")
        if not (partition.isdigit() and offset.isdigit()):
            fail(f"--record {r!r}: expected partition:offset, e.g. 0:42")
        refs.append({"partition": int(partition), "offset": int(offset)})
    body: dict[str, Any] = {**_filters(consumer, since, until, error), "limit": limit}
    if refs:
        body["records"] = refs
    try:
        with api_client(url=(name, url), admin_key=admin_key) as client:
            preview = client.call(name, "POST", "/v1/dlq/replay", json={**body, "dry_run": True})
            items = Client.items(preview)
            if dry_run or not items:
                Console().print(_table(items) if items else "no dead letters match")
                return
            if not yes:
                typer.confirm(f"Replay {len(items)} dead letter(s)?", abort=True)
            done = client.call(name, "POST", "/v1/dlq/replay", json=body)
    except ClientError as exc:
        fail(str(exc))
    Console().print(f"replayed {done['replayed']}")
