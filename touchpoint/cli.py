"""The `touchpoint` command: run the stack (`up`, `serve`), set it up (`migrate`, `topics`),
and talk to it (`journeys`, `events`, `demo`). API calls go through `touchpoint.client`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shared.settings import APP_PORTS, APPS, DEFAULT_PORTS, SERVICES
from touchpoint.client import (
    Client,
    ClientError,
    discover,
    load_documents,
    parse_properties,
    stats_table,
)
from touchpoint.commands import broadcasts, kpis, playbooks, policy
from touchpoint.commands import dlq as dlq_commands
from touchpoint.commands import messages as messages_commands
from touchpoint.commands import secret as secret_commands
from touchpoint.commands import templates as templates_commands
from touchpoint.commands.common import (
    AdminKey,
    AsJson,
    Url,
    WriteKey,
    api_client,
    fail,
    load_settings,
)

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Touchpoint: event-driven customer journeys.")
topics_app = typer.Typer(no_args_is_help=True, help="Kafka topics.")
journeys_app = typer.Typer(no_args_is_help=True, help="Journey definitions (journey service).")
events_app = typer.Typer(no_args_is_help=True, help="Tracking events (ingest service).")
app.add_typer(topics_app, name="topics")
app.add_typer(journeys_app, name="journeys")
app.add_typer(events_app, name="events")

# New command groups: a module in touchpoint/commands/ exporting `app`, one line here each.
app.add_typer(broadcasts.app, name="broadcasts")
app.add_typer(policy.app, name="policy")
app.add_typer(templates_commands.app, name="templates")
app.add_typer(kpis.app, name="kpis")
app.command("report")(kpis.report)
app.add_typer(secret_commands.app, name="secret")
app.add_typer(playbooks.app, name="playbooks")
app.add_typer(messages_commands.app, name="messages")
app.add_typer(dlq_commands.app, name="dlq")


def _check_service(name: str) -> str:
    if name not in (*SERVICES, *APPS):
        raise typer.BadParameter(f"choose one of {', '.join((*SERVICES, *APPS))}")
    return name


@app.command()
def up(
    ports_from: Annotated[int, typer.Option(envvar="TOUCHPOINT_UP_PORTS_FROM", min=1, max=65532,
                                            help="Port of ingest; the others follow it, "
                                                 "the console takes the one before.")] = 8001,
    pg_port: Annotated[int, typer.Option(envvar="TOUCHPOINT_UP_PG_PORT", min=1, max=65535,
                                         help="Port of the embedded Postgres.")] = 55432,
    kafka_port: Annotated[int, typer.Option(envvar="TOUCHPOINT_UP_KAFKA_PORT", min=1, max=65535,
                                            help="Port of the embedded Kafka broker.")] = 9092,
    smtp_port: Annotated[int, typer.Option(envvar="TOUCHPOINT_UP_SMTP_PORT", min=1, max=65535,
                                           help="Port of the dev mail catcher (used when "
                                                "TOUCHPOINT_SMTP_URL is unset).")] = 1025,
    host: Annotated[str, typer.Option(help="Interface the services listen on.")] = "127.0.0.1",
    state_dir: Annotated[Path, typer.Option(help="Where `up` keeps its state.")] = Path(
        ".touchpoint"),
    ready_timeout: Annotated[float, typer.Option(help="Seconds to wait for /readyz.")] = 120.0,
) -> None:
    """Run the whole stack: Postgres and Kafka (embedded unless configured), the four services
    and the web console."""
    from touchpoint.up import UpOptions, launch

    first = DEFAULT_PORTS[SERVICES[0]]
    ports = {name: ports_from + APP_PORTS[name] - first for name in APPS}
    ports |= {name: ports_from + DEFAULT_PORTS[name] - first for name in SERVICES}
    if min(ports.values()) < 1:
        raise typer.BadParameter("leave room for the console before ingest's port",
                                 param_hint="--ports-from")
    options = UpOptions(ports=ports, host=host, pg_port=pg_port, kafka_port=kafka_port,
                        smtp_port=smtp_port,
                        state_dir=state_dir, ready_timeout=ready_timeout)
    raise typer.Exit(launch(options))


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help=f"One of: {', '.join((*SERVICES, *APPS))}.",
                                           callback=_check_service)],
    host: Annotated[str, typer.Option(envvar="TOUCHPOINT_HOST")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(envvar="TOUCHPOINT_PORT", show_default=False,
                                             help="Default: the service's own port.")] = None,
) -> None:
    """Run one service, its HTTP API and its consumers (what containers run); or the console."""
    import os
    import socket

    import uvicorn

    from shared.logging import configure_logging

    # Static consumer-group membership: the same process restarted (same host and port, the
    # only one that can hold that port) rejoins at once (docs/reliability.md#recovery).
    os.environ.setdefault("TOUCHPOINT_CONSUMER_INSTANCE_ID",
                          f"{socket.gethostname()}:{port or (DEFAULT_PORTS | APP_PORTS)[service]}")
    settings = load_settings()  # fail here, readably, rather than inside the app factory
    configure_logging(service, settings.log_level)
    uvicorn.run(f"services.{service}.app:create_app", factory=True, host=host,
                port=port or (DEFAULT_PORTS | APP_PORTS)[service], log_config=None,
                log_level=settings.log_level.lower(), server_header=False,
                access_log=False,  # request metrics are in /metrics; logs stay readable
                # SIGTERM: stop taking requests, give in-flight ones 5 s, then run the lifespan
                # shutdown (consumers commit and stop). Keeps `up`'s 10 s stop budget.
                timeout_graceful_shutdown=5)


@app.command()
def migrate() -> None:
    """Create the database if it is missing and run every service's migrations."""
    from shared.db.migrate import upgrade_all
    from touchpoint.up import safe_url

    settings = load_settings()
    Console().print(f"migrating {safe_url(settings.database_url)}", highlight=False)
    try:
        upgrade_all(settings.database_url)
    except (OSError, ConnectionError) as exc:
        fail(f"cannot reach Postgres at {safe_url(settings.database_url)}: {exc}")
    Console().print(f"migrated: {', '.join(SERVICES)}")


@topics_app.command("create")
def topics_create() -> None:
    """Create every contract topic that does not exist yet (idempotent)."""
    from shared.kafka.admin import ensure_topics

    settings = load_settings()
    try:
        names = asyncio.run(asyncio.wait_for(ensure_topics(settings), 60))
    except Exception as exc:
        fail(f"cannot create topics on {settings.kafka_bootstrap}: {type(exc).__name__}: {exc}")
    Console().print(f"{len(names)} topics ready ({settings.topic_partitions} partitions each): "
                    + ", ".join(names), highlight=False)


@topics_app.command("tail")
def topics_tail(
    topic: Annotated[str, typer.Argument(help="Short (`events`) or full topic name.")],
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest message.")] = False,
    limit: Annotated[int | None, typer.Option(help="Stop after this many messages.")] = None,
    raw: Annotated[bool, typer.Option(help="Values only, one per line (for jq).")] = False,
) -> None:
    """Print a topic's messages as they arrive (no consumer group, nothing committed)."""
    from touchpoint.client import tail

    overrides = {}
    if bootstrap := discover().kafka_bootstrap:
        overrides["kafka_bootstrap"] = bootstrap
    settings = load_settings(**overrides)
    try:
        asyncio.run(tail(settings, topic, from_beginning=from_beginning, limit=limit, raw=raw))
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        fail(f"tailing {topic} on {settings.kafka_bootstrap}: {type(exc).__name__}: {exc}")


@journeys_app.command("apply")
def journeys_apply(
    file: Annotated[str, typer.Option("--file", "-f", help="JSON or YAML file, `-` for stdin.")],
    publish: Annotated[bool, typer.Option(help="Publish each journey after saving it.")] = False,
    url: Url = None, admin_key: AdminKey = None,
) -> None:
    """Create journeys or replace their drafts from a file (optionally publish them)."""
    console = Console()
    context = ""
    try:
        documents = load_documents(file)
        with api_client(url=("journey", url), admin_key=admin_key) as client:
            for number, document in enumerate(documents, 1):
                context = f"journey {document.get('key', f'#{number}')!s} in {file}: "
                saved = client.save_journey(document)
                line = f"journey {saved['key']}: draft saved"
                if publish:
                    version = client.publish_journey(saved["key"])["published_version"]
                    line += f", published as version {version}"
                console.print(line, highlight=False)
    except ClientError as exc:
        fail(f"{context}{exc}")
    if not publish:
        console.print("drafts do not run: publish with "
                      "`touchpoint journeys apply --publish -f ...`", style="dim")


@journeys_app.command("list")
def journeys_list(url: Url = None, admin_key: AdminKey = None) -> None:
    """List the workspace's journeys."""
    try:
        with api_client(url=("journey", url), admin_key=admin_key) as client:
            items = client.list_journeys()
    except ClientError as exc:
        fail(str(exc))
    table = Table("key", "name", "status", "live version", "updated", box=box.SIMPLE_HEAVY)
    for item in items:
        table.add_row(str(item.get("key")), str(item.get("name", "")), str(item.get("status", "")),
                      str(item.get("published_version") or "-"),
                      str(item.get("updated_at", ""))[:16].replace("T", " "))
    Console().print(table if items else "no journeys yet")


JourneyKey = Annotated[str, typer.Argument(help="Journey key.")]


def _journey_read(url: str | None, admin_key: str | None, as_json: bool,
                  read: Callable[[Client], dict[str, Any]]) -> dict[str, Any] | None:
    """`read` from journey's API; printed as JSON (and None returned) with --json."""
    try:
        with api_client(url=("journey", url), admin_key=admin_key) as client:
            body = read(client)
    except ClientError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(body, indent=2))
        return None
    return body


@journeys_app.command("stats")
def journeys_stats(key: JourneyKey, as_json: AsJson = False,
                   url: Url = None, admin_key: AdminKey = None) -> None:
    """Customers per stage and status for one journey."""
    stats = _journey_read(url, admin_key, as_json, lambda client: client.journey_stats(key))
    if stats is not None:
        Console().print(stats_table(stats))


@journeys_app.command("why")
def journeys_why(
    profile_id: Annotated[str, typer.Argument(help="Profile id.")],
    key: JourneyKey, as_json: AsJson = False, url: Url = None, admin_key: AdminKey = None,
) -> None:
    """Why did (or didn't) this customer get a message: the journey's decision trace."""
    trace = _journey_read(url, admin_key, as_json,
                          lambda client: client.journey_trace(profile_id, key))
    if trace is None:
        return
    table = Table("at", "instance", "stage", "step", "decision", "why", box=box.SIMPLE_HEAVY)
    for d in trace.get("trace", []):
        table.add_row(str(d.get("at", ""))[:19].replace("T", " "), str(d.get("instance_key")),
                      str(d.get("stage") or ""), str(d.get("step") or ""),
                      f"{d.get('kind')} {d.get('outcome')}", escape(str(d.get("reason") or "")))
    Console().print(table if trace.get("trace") else f"no decisions about {profile_id} in {key}")


@events_app.command("send")
def events_send(
    event: Annotated[str, typer.Option("--event", "-e", help="Event name: 'Order Completed'.")],
    user_id: Annotated[str | None, typer.Option(help="Segment userId.")] = None,
    anonymous_id: Annotated[str | None, typer.Option(help="Segment anonymousId.")] = None,
    prop: Annotated[list[str] | None, typer.Option(
        "--prop", "-p", help="Property key=value (value parsed as JSON when it is).")] = None,
    properties: Annotated[str | None, typer.Option(help="Properties as a JSON object.")] = None,
    url: Url = None, write_key: WriteKey = None,
) -> None:
    """Send one Segment-style track event to ingest."""
    if not (user_id or anonymous_id):
        fail("give --user-id or --anonymous-id (Segment needs one of them)")
    try:
        call: dict[str, Any] = {"event": event,
                                "properties": parse_properties(prop or [], properties)}
        call.update({k: v for k, v in (("userId", user_id), ("anonymousId", anonymous_id)) if v})
        with api_client(url=("ingest", url), write_key=write_key) as client:
            answer = client.send_call("track", call)
    except ClientError as exc:
        fail(str(exc))
    Console().print(f"accepted: {json.dumps(answer)}", highlight=False)


@app.command()
def demo(
    customers: Annotated[int, typer.Option(min=10, max=5000, help="Synthetic customers "
                                           "(the default keeps the load under 50 events/s "
                                           "on 2 cores).")] = 150,
    minutes: Annotated[float, typer.Option(min=0.1, help="Stop after this long.")] = 5.0,
    yes: Annotated[bool, typer.Option("--yes", help="Run even when the stack's SMTP server "
                                                    "is not the dev mail catcher.")] = False,
    seed: Annotated[int | None, typer.Option(help="Same seed, same shop.")] = None,
    admin_key: AdminKey = None, write_key: WriteKey = None,
) -> None:
    """A synthetic shop running every playbook, with a live dashboard (Ctrl-C stops)."""
    from touchpoint.demo import run_demo

    try:
        with api_client(admin_key=admin_key, write_key=write_key) as client:
            run_demo(client, Console(highlight=False), customers=customers, minutes=minutes,
                     yes=yes, seed=seed)
    except ClientError as exc:
        fail(str(exc))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
