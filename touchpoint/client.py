"""Thin client of a running stack for the CLI: finds it, calls its APIs, tails its topics.

Where it looks, first match wins::

    service URL   TOUCHPOINT_<SERVICE>_URL, then ./.touchpoint/stack.json (written by a
                  running `touchpoint up`), then http://127.0.0.1:<default port>
    admin key     --admin-key, TOUCHPOINT_BOOTSTRAP_ADMIN_KEY, ./.touchpoint/keys.json
    write key     --write-key, TOUCHPOINT_BOOTSTRAP_WRITE_KEY, ./.touchpoint/keys.json
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import psutil
import yaml
from rich import box
from rich.console import Console
from rich.table import Table

from shared.settings import DEFAULT_PORTS, SERVICES, Settings

STATE_DIR = Path(".touchpoint")


class ClientError(Exception):
    """Anything the CLI should print as a one-line (or few-line) error and exit 1 on."""


class ApiError(ClientError):
    """The API answered with an error (problem+json when it is one of ours)."""

    def __init__(self, status: int, body: Any) -> None:
        problem = body if isinstance(body, dict) else {}
        self.status = status
        self.errors: list[dict[str, Any]] = problem.get("errors") or []
        title = problem.get("title") or httpx.codes.get_reason_phrase(status)
        if self.errors:  # one line per field beats the joined `detail`
            message = f"{status} {title}:" + "".join(
                f"\n  {e.get('field', '?')}: {e.get('message', '')}" for e in self.errors)
        else:
            detail = problem.get("detail") or ("" if problem else str(body)[:300])
            message = f"{status} {title}" + (f": {detail}" if detail else "")
        super().__init__(message)


@dataclass
class Target:
    """Where the stack is and which keys to use."""

    urls: dict[str, str]
    admin_key: str | None = None
    write_key: str | None = None
    kafka_bootstrap: str | None = None
    origin: dict[str, str] = field(default_factory=dict)


def read_stack(state_dir: Path = STATE_DIR) -> dict[str, Any]:
    """stack.json of a running `touchpoint up`; empty when none is running here."""
    try:
        stack: dict[str, Any] = json.loads((state_dir / "stack.json").read_text())
    except (OSError, ValueError):
        return {}
    # A stale file (an `up` killed with SIGKILL) must not send us to the wrong ports.
    return stack if psutil.pid_exists(int(stack.get("pid", 0))) else {}


def discover(state_dir: Path = STATE_DIR, environ: Mapping[str, str] = os.environ) -> Target:
    stack = read_stack(state_dir)
    try:
        keys = json.loads((state_dir / "keys.json").read_text())
    except (OSError, ValueError):
        keys = {}
    urls = {
        name: (environ.get(f"TOUCHPOINT_{name.upper()}_URL")
               or stack.get("urls", {}).get(name)
               or f"http://127.0.0.1:{DEFAULT_PORTS[name]}").rstrip("/")
        for name in SERVICES
    }
    return Target(
        urls=urls,
        admin_key=environ.get("TOUCHPOINT_BOOTSTRAP_ADMIN_KEY") or keys.get("admin_key"),
        write_key=environ.get("TOUCHPOINT_BOOTSTRAP_WRITE_KEY") or keys.get("write_key"),
        kafka_bootstrap=environ.get("TOUCHPOINT_KAFKA_BOOTSTRAP") or stack.get("kafka_bootstrap"),
    )


class Client:
    """Blocking calls to the four services, one method per thing the CLI does."""

    def __init__(self, target: Target, timeout: float = 10.0) -> None:
        self.target = target
        self._http = httpx.Client(timeout=timeout, headers={"User-Agent": "touchpoint-cli"})

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._http.close()

    def put_template(self, key: str, template: dict[str, Any]) -> Any:
        return self.call("messaging", "PUT", f"/v1/templates/{key}", json=template)

    def list_messages(self, **params: str | int) -> list[dict[str, Any]]:
        return self.items(self.call("messaging", "GET", "/v1/messages", params=params))

    def save_journey(self, document: dict[str, Any]) -> Any:
        return self.call("journey", "POST", "/v1/journeys", json=document)

    def publish_journey(self, key: str) -> Any:
        return self.call("journey", "POST", f"/v1/journeys/{key}/publish")

    def list_journeys(self) -> list[dict[str, Any]]:
        return self.items(self.call("journey", "GET", "/v1/journeys"))

    def journey_stats(self, key: str) -> Any:
        return self.call("journey", "GET", f"/v1/journeys/{key}/stats")

    def journey_trace(self, profile_id: str, key: str) -> Any:
        return self.call("journey", "GET", f"/v1/profiles/{profile_id}/journeys/{key}/trace")

    def send_call(self, kind: str, call: dict[str, Any]) -> Any:
        """A Segment call (`track`, `identify`, ...) to ingest with the write key."""
        return self.call("ingest", "POST", f"/v1/{kind}", json=call, auth="write")

    def call(self, service: str, method: str, path: str,
             auth: Literal["admin", "write"] = "admin", **kwargs: Any) -> Any:
        """One API call; JSON answers are decoded, errors raise `ApiError` (command groups in
        `touchpoint/commands/` use this rather than adding a method here for every route)."""
        url = self.target.urls[service] + path
        key = self.target.admin_key if auth == "admin" else self.target.write_key
        if not key:
            env = f"TOUCHPOINT_BOOTSTRAP_{auth.upper()}_KEY"
            raise ClientError(f"no {auth} key: pass --{auth}-key, set {env}, or run this where "
                              f"`touchpoint up` keeps ./.touchpoint/keys.json")
        if auth == "admin":
            kwargs["headers"] = {"Authorization": f"Bearer {key}"}
        else:
            kwargs["auth"] = (key, "")  # Segment style: write key as user, empty password
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise ClientError(f"cannot reach {service} at {self.target.urls[service]} "
                              f"({type(exc).__name__}); is `touchpoint up` running?") from None
        body: Any = response.json() if _is_json(response) else response.text
        if response.is_error:
            raise ApiError(response.status_code, body)
        return body

    @staticmethod
    def items(body: Any) -> list[dict[str, Any]]:
        return list(body.get("items", []) if isinstance(body, dict) else body)


def _is_json(response: httpx.Response) -> bool:
    return "json" in response.headers.get("content-type", "") and bool(response.content)


def load_documents(path: str) -> list[dict[str, Any]]:
    """Journey documents from a JSON or YAML file (`-` is stdin); a list or many YAML docs."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {exc.strerror}") from None
    try:
        if path.endswith(".json"):
            loaded: list[Any] = [json.loads(text)]
        else:  # YAML is a superset of JSON, so anything else goes through the YAML parser
            loaded = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except (ValueError, yaml.YAMLError) as exc:
        raise ClientError(f"{path} is not valid JSON/YAML: {exc}") from None
    documents = [d for item in loaded for d in (item if isinstance(item, list) else [item])]
    if not documents or not all(isinstance(d, dict) for d in documents):
        raise ClientError(f"{path}: expected a journey document (an object) or a list of them")
    return documents


def parse_properties(pairs: list[str], raw_json: str | None) -> dict[str, Any]:
    """`--properties '{...}'` merged with `-p key=value` pairs (values parsed as JSON if valid)."""
    properties: dict[str, Any] = {}
    if raw_json:
        try:
            properties = json.loads(raw_json)
        except ValueError as exc:
            raise ClientError(f"--properties is not valid JSON: {exc}") from None
        if not isinstance(properties, dict):
            raise ClientError("--properties must be a JSON object")
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ClientError(f"-p expects key=value, got {pair!r}")
        try:
            properties[name] = json.loads(value)
        except ValueError:
            properties[name] = value
    return properties


async def tail(settings: Settings, topic: str, *, from_beginning: bool, limit: int | None,
                raw: bool) -> None:
    """Print `topic` (short or full name) until `limit` messages or Ctrl-C."""
    from aiokafka import AIOKafkaConsumer

    from shared.contracts.registry import TOPICS

    name = settings.topic(topic) if topic in TOPICS else topic
    console = Console(highlight=False)
    # No group: every partition is ours, nothing is committed, other consumers are unaffected.
    consumer = AIOKafkaConsumer(name, bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                enable_auto_commit=False,
                                auto_offset_reset="earliest" if from_beginning else "latest")
    await consumer.start()
    try:
        if not raw:
            console.print(f"tailing {name} on {settings.kafka_bootstrap} (Ctrl-C to stop)",
                          style="dim")
        seen = 0
        async for record in consumer:
            value = (record.value or b"").decode("utf-8", errors="replace")
            if raw:
                print(value, flush=True)
            else:
                key = (record.key or b"").decode("utf-8", errors="replace")
                headers = {k: v.decode("utf-8", errors="replace") for k, v in record.headers}
                console.print(f"── {record.topic}[{record.partition}]@{record.offset} key={key}"
                              + (f" headers={json.dumps(headers)}" if headers else ""),
                              style="dim", soft_wrap=True)
                try:
                    console.print_json(value)
                except ValueError:
                    console.print(value, soft_wrap=True, markup=False)
            seen += 1
            if limit is not None and seen >= limit:
                return
    finally:
        await consumer.stop()


def stats_table(stats: dict[str, Any]) -> Table | str:
    """`GET /v1/journeys/{key}/stats` as a table: one row per stage, one column per status.
    Cells count instances, with distinct customers in brackets where they differ."""
    stages: dict[str, dict[str, int]] = stats.get("stages") or {}
    people: dict[str, dict[str, int]] = stats.get("stage_customers") or {}
    heading = f"{stats.get('key')}: {stats.get('entries', 0)} entries"
    if "customers" in stats:
        heading += f", {stats['customers']} customers"
    if not stages:
        return f"{heading}, no customer in any stage yet"
    statuses = sorted({status for counts in stages.values() for status in counts})
    table = Table("stage", *statuses, title=heading, title_justify="left", box=box.SIMPLE_HEAVY)
    for stage, counts in stages.items():
        cells = []
        for status in statuses:
            n, who = counts.get(status, 0), people.get(stage, {}).get(status)
            cells.append(f"{n} ({who})" if who is not None and who != n else str(n))
        table.add_row(stage, *cells)
    return table
