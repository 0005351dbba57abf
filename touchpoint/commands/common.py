"""What every `touchpoint` sub-command shares: errors, settings, option types, the API client."""

from __future__ import annotations

from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from shared.settings import Settings
from touchpoint.client import Client, discover

AdminKey = Annotated[str | None, typer.Option(help="Admin key (default: env, keys.json).",
                                              show_default=False)]
WriteKey = Annotated[str | None, typer.Option(help="Write key (default: env, keys.json).",
                                              show_default=False)]
AsJson = Annotated[bool, typer.Option("--json", help="Print the raw JSON.")]
Url = Annotated[str | None, typer.Option(help="Service base URL (default: discovered).",
                                         show_default=False)]


def fail(message: str, code: int = 1) -> NoReturn:
    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def load_settings(**overrides: Any) -> Settings:
    from pydantic import ValidationError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        fail("bad configuration:\n" + "\n".join(
            f"  TOUCHPOINT_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}"
            for e in exc.errors()))


def api_client(*, url: tuple[str, str | None] | None = None, admin_key: str | None = None,
           write_key: str | None = None) -> Client:
    """An API client for the discovered stack; `url` overrides one service's base URL."""
    target = discover()
    if url is not None and url[1]:
        target.urls[url[0]] = url[1].rstrip("/")
    target.admin_key = admin_key or target.admin_key
    target.write_key = write_key or target.write_key
    return Client(target)
