"""`touchpoint playbooks list|install`: proven journeys and their templates, installed
through the public APIs (messaging `PUT /v1/templates/{key}`, journey `POST /v1/journeys`)."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from touchpoint.client import ApiError, Client, ClientError
from touchpoint.commands.common import AdminKey, api_client, fail
from touchpoint.playbooks import Playbook, PlaybookError, load, names, parse_knob
from touchpoint.playbooks.checks import journey_errors, normalised, template_errors

app = typer.Typer(no_args_is_help=True, help="Playbooks: proven journeys with their templates.")

TEMPLATE_FIELDS = {"channel": None, "subject": None, "html": None, "text": None,
                   "category": "marketing", "topic": None}


@dataclass
class Change:
    """One thing install would write: a template or a journey, new or changed."""

    kind: str  # code-pool | template | journey
    key: str
    body: dict[str, Any]
    before: dict[str, Any] | None  # None: new
    publish: bool = False  # journey: publish after saving

    @property
    def label(self) -> str:
        return f"{self.kind} {self.key}"

    def diff(self) -> list[str]:
        new = json.dumps(self.body, indent=2, sort_keys=True).splitlines()
        if self.before is None:
            return [f"+ {line}" for line in new]
        old = json.dumps(self.before, indent=2, sort_keys=True).splitlines()
        return [line.rstrip("\n") for line in difflib.unified_diff(
            old, new, "installed", "playbook", n=1, lineterm="")][2:]


def check(book: Playbook, document: dict[str, Any]) -> list[str]:
    """Everything wrong with a playbook before anything is sent: Liquid with its line and
    column, the journey document field by field."""
    errors = [e for key, t in book.templates.items() for e in template_errors(key, t)]
    errors += journey_errors(document)
    if not errors and document.get("key") != book.name:
        errors.append(f"journey key: '{document.get('key')}' is not the playbook's name "
                      f"'{book.name}'")
    return errors


def _template(body: dict[str, Any]) -> dict[str, Any]:
    return {k: body.get(k, default) for k, default in TEMPLATE_FIELDS.items()}


def plan(client: Client, books: list[Playbook], *, publish: bool, demo: bool = False,
         knobs: dict[str, Any] | None = None) -> list[Change]:
    """What install would write to reach the playbooks' state (nothing when installed)."""
    changes: list[Change] = []
    for book in books:
        document = book.configured(demo=demo, values={k: v for k, v in (knobs or {}).items()
                                                      if k in book.knobs})
        errors = check(book, document)
        if errors:
            raise PlaybookError(f"playbook {book.name} refused:\n  " + "\n  ".join(errors))
        for key, body in book.code_pools.items():
            # Only created: a pool in use is never refilled or replaced by a reinstall.
            if _get(client, "messaging", f"/v1/code-pools/{key}") is None:
                changes.append(Change("code-pool", key, body, None))
        for key, body in book.templates.items():
            wanted = _template(body)
            installed = _get(client, "messaging", f"/v1/templates/{key}")
            before = None if installed is None else _template(installed)
            if before != wanted:
                changes.append(Change("template", key, wanted, before))
        changes += _journey_change(client, normalised(document), publish)
    return changes


def _journey_change(client: Client, wanted: dict[str, Any], publish: bool) -> list[Change]:
    key = wanted["key"]
    summary = _get(client, "journey", f"/v1/journeys/{key}")
    if summary is None:
        return [Change("journey", key, wanted, None, publish)]
    if summary.get("status") == "archived":
        raise PlaybookError(f"journey {key} is archived; an archived key cannot be reused")
    live = None
    if summary.get("published_version"):
        version = _get(client, "journey", f"/v1/journeys/{key}/versions/"
                                          f"{summary['published_version']}") or {}
        live = version.get("document")
    draft = summary.get("draft")
    if publish:
        if live == wanted and draft is None:
            return []
        return [Change("journey", key, wanted, live if draft is None else draft, True)]
    if draft == wanted or (draft is None and live == wanted):
        return []
    return [Change("journey", key, wanted, draft if draft is not None else live)]


def _get(client: Client, service: str, path: str) -> Any:
    try:
        return client.call(service, "GET", path)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def apply(client: Client, changes: list[Change]) -> list[str]:
    """Write the changes, code pools and templates first (a journey may send as soon as it
    is live)."""
    done = []
    order = {"code-pool": 0, "template": 1, "journey": 2}
    for change in sorted(changes, key=lambda c: order[c.kind]):
        try:
            if change.kind == "code-pool":
                answer = client.call("messaging", "PUT", f"/v1/code-pools/{change.key}",
                                     json=change.body)
                done.append(f"code pool {change.key}: created with {answer.get('total')} codes")
                continue
            if change.kind == "template":
                client.put_template(change.key, change.body)
                done.append(f"template {change.key}: saved")
                continue
            client.save_journey(change.body)
            line = f"journey {change.key}: draft saved"
            if change.publish:
                version = client.publish_journey(change.key).get("published_version")
                line += f", published as version {version}"
            done.append(line)
        except ApiError as exc:
            raise ClientError(f"{change.label} refused: {exc}") from None
    return done


def select(name: str | None, every: bool) -> list[Playbook]:
    if every == (name is not None):
        fail("give a playbook NAME or --all")
    return [load(n) for n in names()] if every else [load(name or "")]


@app.command("list")
def list_playbooks() -> None:
    """The playbooks shipped with Touchpoint."""
    table = Table("name", "what it does", "templates", box=box.SIMPLE_HEAVY)
    for name in names():
        book = load(name)
        table.add_row(name, escape(book.summary), str(len(book.templates)))
    Console().print(table)


@app.command("show")
def show(name: Annotated[str, typer.Argument(help="Playbook name.")]) -> None:
    """A playbook's README: purpose, stages, events, KPIs, knobs."""
    try:
        book = load(name)
    except PlaybookError as exc:
        fail(str(exc))
    from rich.markdown import Markdown

    Console().print(Markdown(book.readme))


@app.command("install")
def install(
    name: Annotated[str | None, typer.Argument(help="Playbook name, or a playbook folder "
                                                    "path (`./my/welcome`).")] = None,
    every: Annotated[bool, typer.Option("--all", help="Install every playbook.")] = False,
    publish: Annotated[bool, typer.Option(help="Publish the journeys (default: drafts, "
                                               "which do not run).")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Apply without asking.")] = False,
    demo: Annotated[bool, typer.Option(help="Demo knobs: waits of seconds, no quiet hours, "
                                            "no holdout.")] = False,
    knob: Annotated[list[str] | None, typer.Option(
        "--knob", "-k", help="name=value (value parsed as JSON when it is), e.g. grace=PT30M.")
    ] = None,
    admin_key: AdminKey = None,
) -> None:
    """Install playbooks under their names: shows the diff, then asks before applying."""
    console = Console(highlight=False)
    try:
        books = select(name, every)
        values = dict(parse_knob(k) for k in knob or [])
        unknown = set(values) - {k for b in books for k in b.knobs}
        if unknown:
            raise PlaybookError(f"no knob {', '.join(sorted(unknown))} in "
                                f"{', '.join(b.name for b in books)}")
        with api_client(admin_key=admin_key) as client:
            changes = plan(client, books, publish=publish, demo=demo, knobs=values)
            if not changes:
                console.print("nothing to do: installed as the playbooks say")
                return
            for change in changes:
                state = "new" if change.before is None else "changed"
                console.print(f"[bold]{change.label}[/] ({state}"
                              f"{', publish' if change.publish else ''})")
                for line in change.diff():
                    style = "green" if line.startswith("+") else "red" if line.startswith(
                        "-") else "dim"
                    console.print(f"  [{style}]{escape(line)}[/]")
            if not yes and not typer.confirm("Apply?", default=False):
                console.print("nothing applied")
                raise typer.Exit(1)
            for line in apply(client, changes):
                console.print(line)
    except (PlaybookError, ClientError) as exc:
        fail(str(exc))
    if not publish:
        console.print("journeys are drafts and do not run: add --publish to make them live",
                      style="dim")
