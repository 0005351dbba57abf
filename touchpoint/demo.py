"""`touchpoint demo`: a synthetic shop running the playbooks, through the public APIs only.

1. Refuses a stack whose SMTP server is not `up`'s dev mail catcher (unless `--yes`).
2. Installs every playbook with its demo knobs (waits of seconds) and pauses the ones
   that are live, so the history below does not enter them.
3. Sends each customer's backdated history (Segment `timestamp`) to ingest, waits for
   profile to take it in, publishes the playbooks, then sends the lapsing customers'
   history (their lifecycle changes enter win-back) and asks profile to recompute.
4. Plays the customers' live behaviour while a dashboard shows entries, stage
   populations, sends and, where profile answers `GET /v1/kpis`, the KPIs.
Ctrl-C stops it cleanly; `--minutes` bounds it.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from touchpoint import demo_shop
from touchpoint.client import ApiError, Client, ClientError, read_stack
from touchpoint.commands.playbooks import apply, plan
from touchpoint.demo_dashboard import dashboard, kpis, mail_count, snapshot
from touchpoint.playbooks import load, names

MAX_RATE = 40.0  # events/s sent to ingest: the stack stays under 50 events/s on 2 cores
DEFAULT_CUSTOMERS = 150  # about 1,050 history calls (~26 s) and 360 live ones
BATCH = 25
REFRESH_S = 2.0
KPI_EVERY_S = 10.0


class DemoRefused(ClientError):
    """The demo will not run against this stack (the message says why and what to do)."""


def check_mail_catcher(stack: dict[str, Any], yes: bool) -> str | None:
    """The dev mail catcher's folder, or None. Anything else needs `--yes`: the demo sends
    hundreds of emails (to example.com addresses, but through a real server)."""
    if stack.get("mail_catcher"):
        return str(stack.get("mail_dir") or "") or None
    if yes:
        return None
    where = "this stack's SMTP server is configured (TOUCHPOINT_SMTP_URL)" if stack else \
        "no `touchpoint up` runs from this directory, so its SMTP server is unknown"
    raise DemoRefused(f"{where}; the demo sends hundreds of emails. Run it against "
                      "`touchpoint up` with its dev mail catcher, or pass --yes")


@dataclass
class Pacer:
    """Sends Segment calls to ingest in batches, at most `rate` calls per second: each
    batch waits for the time its calls take at that rate, so idle time never buys a burst."""

    client: Client
    rate: float = MAX_RATE
    sent: int = 0
    free_at: float = field(default_factory=time.monotonic)
    sleep: Callable[[float], None] = time.sleep

    def send(self, calls: list[dict[str, Any]]) -> None:
        for i in range(0, len(calls), BATCH):
            chunk = calls[i:i + BATCH]
            now = time.monotonic()
            if self.free_at > now:
                self.sleep(self.free_at - now)
            self.free_at = max(self.free_at, now) + len(chunk) / self.rate
            self.client.call("ingest", "POST", "/v1/batch", json={"batch": chunk},
                             auth="write")
            self.sent += len(chunk)


@dataclass
class Shop:
    run: str
    customers: list[demo_shop.Customer]
    rng: random.Random

    @classmethod
    def new(cls, count: int, seed: int | None = None) -> Shop:
        rng = random.Random(seed)
        run = secrets.token_hex(3) if seed is None else f"{seed:06x}"[-6:]
        return cls(run, demo_shop.customers(run, count, rng), rng)

    def history(self, now: datetime, lapsing: bool) -> list[dict[str, Any]]:
        return [call for c in self.customers if (c.persona == "lapsing") == lapsing
                for call in demo_shop.history(c, now, self.rng, self.run)]

    def live(self, start: datetime) -> list[tuple[float, dict[str, Any]]]:
        plan_ = [item for c in self.customers
                 for item in demo_shop.live(c, start, self.rng, self.run)]
        for _, call in plan_:
            call.pop("timestamp", None)  # live calls happen now: ingest stamps them
        return sorted(plan_, key=lambda item: item[0])


def _journey_status(client: Client, key: str) -> str | None:
    try:
        return str(client.call("journey", "GET", f"/v1/journeys/{key}").get("status"))
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def _caught_up(client: Client, shop: Shop, sent: dict[str, int], timeout: float) -> bool:
    """Profile has every history event of the last customers sent (a sample)."""
    sample = [c.user_id for c in shop.customers if sent.get(c.user_id)][-3:]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = 0
        for user in sample:
            try:
                found = client.call("profile", "GET", "/v1/profiles/lookup",
                                    params={"user_id": user})
                profile = client.call("profile", "GET", f"/v1/profiles/{found['id']}")
            except ApiError:
                continue
            done += (profile.get("metrics") or {}).get("event_count", 0) >= sent[user] - 1
        if done == len(sample):
            return True
        time.sleep(0.5)
    return False


def _with_progress(console: Console, label: str, calls: list[dict[str, Any]],
                   pacer: Pacer) -> None:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(label, total=len(calls))
        for i in range(0, len(calls), BATCH * 2):
            pacer.send(calls[i:i + BATCH * 2])
            progress.advance(task, len(calls[i:i + BATCH * 2]))


def _load_history(client: Client, console: Console, shop: Shop, pacer: Pacer,
                  calls: list[dict[str, Any]], label: str) -> None:
    """Send backdated calls, then wait until profile (and, a little later, journey) has
    them, so that the playbooks published next only see live behaviour."""
    _with_progress(console, label, calls, pacer)
    if not _caught_up(client, shop, _count(calls), timeout=45):
        console.print("profile is still busy with the history; going on", style="yellow")
    time.sleep(2)  # journey reads what profile wrote: let it drain too


def _pause(client: Client, keys: Iterable[str]) -> None:
    for key in keys:
        if _journey_status(client, key) == "published":
            client.call("journey", "POST", f"/v1/journeys/{key}/pause")


def _resume(client: Client, keys: Iterable[str]) -> None:
    for key in keys:
        if _journey_status(client, key) == "paused":
            client.call("journey", "POST", f"/v1/journeys/{key}/resume")


def _count(calls: Iterable[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for call in calls:
        out[call["userId"]] = out.get(call["userId"], 0) + 1
    return out


def run_demo(client: Client, console: Console, *, customers: int = DEFAULT_CUSTOMERS,
             minutes: float = 5.0, yes: bool = False, seed: int | None = None,
             rate: float = MAX_RATE, stack: dict[str, Any] | None = None,
             clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """The whole demo; returns the last dashboard state. Ctrl-C ends it cleanly."""
    mail_dir = check_mail_catcher(read_stack() if stack is None else stack, yes)
    deadline = clock() + minutes * 60
    shop = Shop.new(customers, seed)
    pacer = Pacer(client, rate)
    state: dict[str, Any] = {"playbooks": {}, "kpis": None}
    mail_before = mail_count(mail_dir) or 0
    try:
        books = [load(n) for n in names()]
        changes = plan(client, books, publish=True, demo=True)
        _pause(client, names())  # history must not enter playbooks live from an earlier run
        for line in apply(client, [c for c in changes if c.kind == "template"]):
            console.print(line)
        console.print(f"[bold]shop[/] {customers} customers (demo-{shop.run}-*, "
                      f"@example.com, trait demo=true), at most {rate:g} events/s")
        now = datetime.now(UTC)
        _load_history(client, console, shop, pacer, shop.history(now, lapsing=False),
                      "history")
        for line in apply(client, [c for c in changes if c.kind == "journey"]):
            console.print(line)
        # The lapsing customers' history enters win-back only: profile computes their
        # lifecycle as the orders arrive, and those changes are what win-back listens to.
        _pause(client, [n for n in names() if n != "win-back"])
        _resume(client, ["win-back"])
        _load_history(client, console, shop, pacer, shop.history(now, lapsing=True),
                      "lapsing customers")
        _resume(client, names())
        try:
            client.call("profile", "POST", "/v1/profile-settings/recompute")
            console.print("profile: recompute requested (lifecycle, RFM, churn risk)")
        except ApiError as exc:
            console.print(f"profile recompute: {exc}", style="yellow")
        schedule = shop.live(datetime.now(UTC))
        started, refreshed, measured = clock(), 0.0, -KPI_EVERY_S
        figures: list[tuple[str, float]] | None = None
        with Live(console=console, refresh_per_second=2, transient=False) as view:
            while clock() < deadline:
                elapsed = clock() - started
                due = [call for at, call in schedule if at <= elapsed]
                schedule = [(at, call) for at, call in schedule if at > elapsed]
                if due:
                    pacer.send(due)
                if clock() - refreshed >= REFRESH_S:
                    state = snapshot(client)
                    if clock() - measured >= KPI_EVERY_S:  # a workspace-wide query: rarely
                        figures, measured = kpis(client), clock()
                    state["kpis"] = figures
                    refreshed = clock()
                    mail = mail_count(mail_dir)
                    left = max(deadline - clock(), 0)
                    header = (f"touchpoint demo: {elapsed:.0f}s live, {pacer.sent} events sent,"
                              f" {len(schedule)} to go, {left:.0f}s left (Ctrl-C stops)")
                    view.update(dashboard(state, header,
                                          None if mail is None else mail - mail_before))
                time.sleep(0.25)
    except KeyboardInterrupt:
        try:
            _resume(client, names())  # stopped while loading history: leave them live
        except (ClientError, KeyboardInterrupt):
            pass
        console.print("\nstopped. The playbooks stay installed and live; customers inside "
                      "carry on.")
    return state
