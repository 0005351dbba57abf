"""`touchpoint messages`: the message log's operator actions (messaging service)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from touchpoint.client import Client, ClientError
from touchpoint.commands.common import AdminKey, Url, api_client, fail

app = typer.Typer(no_args_is_help=True, help="The message log (messaging service).")
PAGE = 500


def unknown_ids(client: Client, limit: int) -> list[str]:
    """The ids of the workspace's `unknown` messages, oldest pages last (newest first)."""
    ids: list[str] = []
    while len(ids) < limit:
        page = Client.items(client.call("messaging", "GET", "/v1/messages", params={
            "status": "unknown", "limit": min(PAGE, limit - len(ids)), "offset": len(ids)}))
        ids += [str(m["id"]) for m in page]
        if len(page) < PAGE:
            break
    return ids[:limit]


@app.command()
def resend(
    message_ids: Annotated[list[str] | None, typer.Argument(help="Message ids to resend.",
                                                            show_default=False)] = None,
    unknown: Annotated[bool, typer.Option("--unknown", help="Every message whose outcome is "
                                          "unknown (a crash during its provider call).")] = False,
    limit: Annotated[int, typer.Option(min=1, max=100_000,
                                       help="At most this many with --unknown.")] = 1000,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Don't ask.")] = False,
    url: Url = None,
    admin_key: AdminKey = None,
) -> None:
    """Send `unknown` or `failed` messages again, one by one. An `unknown` message may
    already have been delivered: resending risks a duplicate."""
    console = Console()
    if not message_ids and not unknown:
        fail("name message ids, or pass --unknown")
    try:
        with api_client(url=("messaging", url), admin_key=admin_key) as client:
            ids = list(dict.fromkeys((message_ids or []) + (unknown_ids(client, limit)
                                                            if unknown else [])))
            if not ids:
                console.print("nothing to resend")
                return
            if not yes:
                typer.confirm(f"Resend {len(ids)} message(s)? Any whose outcome is unknown "
                              "may reach its recipient twice.", abort=True)
            done, refused = 0, 0
            for message_id in ids:
                try:
                    client.call("messaging", "POST", f"/v1/messages/{message_id}/resend")
                    done += 1
                except ClientError as exc:
                    refused += 1
                    console.print(f"{message_id}: {exc}")
    except ClientError as exc:
        fail(str(exc))
    console.print(f"resent {done}, refused {refused} (the retry sweeper sends them within "
                  "a second; duplicates are possible for those that were unknown)")
    if refused:
        raise typer.Exit(1)
