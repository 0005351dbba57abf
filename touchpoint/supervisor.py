"""Process supervision for `touchpoint up`: a supervisor that starts children, prefixes their
output, restarts them with backoff and stops them for good, and cleans up after a killed `up`.

Children run in their own session, so a Ctrl-C in the terminal reaches only `up`, which
then stops them in order (services before the broker and Postgres they need).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from rich.console import Console
from rich.text import Text

MAX_BACKOFF = 30.0
HEALTHY_UPTIME = 30.0  # a child that ran this long gets its backoff reset


@dataclass
class ChildSpec:
    name: str
    argv: list[str]
    env: dict[str, str]
    color: str = "white"
    # Runs after every (re)start, e.g. recreating topics on a fresh memory broker.
    on_start: Callable[[], Awaitable[None]] | None = None


@dataclass
class _Child:
    spec: ChildSpec
    proc: asyncio.subprocess.Process | None = None
    task: asyncio.Task[None] | None = None
    pump: asyncio.Task[None] | None = None
    stopping: bool = False
    first_start: asyncio.Future[None] = field(default_factory=asyncio.Future)


class Supervisor:
    """Runs children with prefixed output, restarts the ones that die, and stops them all.

    The pids are recorded in `children.json` so that the next `up` can stop whatever an
    `up` killed with SIGKILL left behind (`reap_orphans`).
    """

    def __init__(self, console: Console, state_dir: Path) -> None:
        self.console = console
        self.record_path = state_dir / "children.json"
        self._children: dict[str, _Child] = {}

    def say(self, message: str, style: str = "bold") -> None:
        self.console.print(Text.assemble((f"{'touchpoint':>10} │ ", style), message),
                           soft_wrap=True, highlight=False)

    async def start(self, spec: ChildSpec) -> None:
        """Start `spec` and keep it running; returns once it started (and on_start ran)."""
        child = _Child(spec)
        self._children[spec.name] = child
        child.task = asyncio.create_task(self._keep_alive(child), name=f"keep-{spec.name}")
        await child.first_start

    async def run_once(self, spec: ChildSpec) -> int:
        """Run a one-shot command to completion (killed if we are cancelled); its exit code."""
        child = _Child(spec)
        self._children[spec.name] = child
        try:
            proc = await self._spawn(child)
            return await proc.wait()
        finally:
            await self._terminate(child, grace=2.0)
            del self._children[spec.name]

    async def stop(self, names: list[str], grace: float) -> None:
        """SIGTERM the named children, SIGKILL whatever is left after `grace` seconds."""
        children = [self._children[n] for n in names if n in self._children]
        await asyncio.gather(*(self._terminate(child, grace) for child in children))

    def kill_all(self) -> None:
        """Second Ctrl-C: no more waiting."""
        for child in self._children.values():
            child.stopping = True
            if child.proc is not None and child.proc.returncode is None:
                _signal_group(child.proc.pid, signal.SIGKILL)

    async def _keep_alive(self, child: _Child) -> None:
        delay = 1.0
        while True:
            try:
                proc = await self._spawn(child)
            except OSError as exc:
                if not child.first_start.done():
                    child.first_start.set_exception(exc)
                    return
                self.say(f"{child.spec.name} could not start: {exc}; retrying in {delay:.0f}s",
                         "bold red")
            else:
                started = time.monotonic()
                if child.spec.on_start is not None:
                    try:
                        await child.spec.on_start()
                    except Exception as exc:
                        if not child.first_start.done():
                            child.first_start.set_exception(exc)
                            return
                        self.say(f"{child.spec.name}: after-start step failed: {exc}", "bold red")
                if not child.first_start.done():
                    child.first_start.set_result(None)
                code = await proc.wait()
                if child.stopping:
                    return
                uptime = time.monotonic() - started
                delay = 1.0 if uptime >= HEALTHY_UPTIME else delay
                self.say(f"{child.spec.name} {describe_exit(code)} after {uptime:.1f}s; "
                         f"restarting in {delay:.0f}s", "bold red")
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)

    async def _spawn(self, child: _Child) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *child.spec.argv, env=child.spec.env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True, limit=1 << 20,
        )
        child.proc = proc
        self._record()
        assert proc.stdout is not None
        child.pump = asyncio.create_task(self._pump(child.spec, proc.stdout),
                                         name=f"log-{child.spec.name}")
        return proc

    async def _pump(self, spec: ChildSpec, stream: asyncio.StreamReader) -> None:
        prefix = (f"{spec.name:>10} │ ", spec.color)
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # one line over the 1 MiB limit: asyncio drops it
                raw = b"[line too long, dropped]\n"
            if not raw:
                return
            line = Text.from_ansi(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
            try:
                self.console.print(Text.assemble(prefix, line), soft_wrap=True, highlight=False)
            except OSError:
                pass  # our stdout is gone (closed pipe): keep draining so the child never blocks

    async def _terminate(self, child: _Child, grace: float) -> None:
        child.stopping = True
        proc = child.proc
        if proc is not None and proc.returncode is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                self.say(f"{child.spec.name} did not stop within {grace:.0f}s; killing it",
                         "bold red")
                _signal_group(proc.pid, signal.SIGKILL)
                await proc.wait()
        if proc is not None:
            # Anything the child started in its session goes with it.
            _signal_group(proc.pid, signal.SIGKILL)
        if child.pump is not None:
            # Let its last lines (often the reason it stopped) reach the terminal.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(child.pump, 1.0)
        if child.task is not None and child.task is not asyncio.current_task():
            child.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await child.task
        self._record()

    def _record(self) -> None:
        live = [
            {"name": c.spec.name, "pid": c.proc.pid, "create_time": _create_time(c.proc.pid)}
            for c in self._children.values()
            if c.proc is not None and c.proc.returncode is None
        ]
        self.record_path.write_text(json.dumps(live))


def reap_orphans(state_dir: Path, say: Callable[[str], None]) -> None:
    """Stop children recorded by an earlier `up` that died without stopping them."""
    path = state_dir / "children.json"
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    orphans = []
    for record in records:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(record["pid"])
            # Same pid and start time: it is really ours, not a recycled pid.
            if abs(proc.create_time() - (record["create_time"] or 0)) < 0.05:
                say(f"stopping {record['name']} left running by an earlier `touchpoint up` "
                    f"(pid {proc.pid})")
                _signal_group(proc.pid, signal.SIGTERM)
                orphans.append(proc)
    _gone, alive = psutil.wait_procs(orphans, timeout=5)
    for proc in alive:
        _signal_group(proc.pid, signal.SIGKILL)
    path.unlink(missing_ok=True)


def describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # Each child leads its own session, so its pid is its process group id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _create_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None
