"""`touchpoint policy`: the workspace's contact policy (journey service)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from touchpoint.client import ClientError, load_documents
from touchpoint.commands.common import AdminKey, Url, api_client, fail

app = typer.Typer(no_args_is_help=True, help="The contact policy: caps, quiet hours, control "
                                             "group (journey service).")


def _call(url: str | None, admin_key: str | None, method: str, **kwargs: Any) -> Any:
    try:
        with api_client(url=("journey", url), admin_key=admin_key) as client:
            return client.call("journey", method, "/v1/policy", **kwargs)
    except ClientError as exc:
        fail(str(exc))


@app.command("show")
def show(url: Url = None, admin_key: AdminKey = None) -> None:
    """Print the policy as JSON."""
    print(json.dumps(_call(url, admin_key, "GET"), indent=2))


@app.command("apply")
def apply(file: Annotated[str, typer.Option("--file", "-f", help="JSON or YAML file.")],
          url: Url = None, admin_key: AdminKey = None) -> None:
    """Replace the policy from a file."""
    try:
        [document] = load_documents(file)
    except ValueError:
        fail(f"{file}: expected one policy document")
    except ClientError as exc:
        fail(str(exc))
    saved = _call(url, admin_key, "PUT", json=document)
    print(json.dumps(saved, indent=2))
