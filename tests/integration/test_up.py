"""`touchpoint up` as users run it: embedded Postgres and Tansu, four services, clean stop.

Runs the real command in a temporary working directory on free ports, so it neither
needs nor disturbs whatever else runs on 8001-8004, 9092 or 5432.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import smtplib
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from shared.settings import APPS, SERVICES
from tests.support.net import free_port

pytestmark = pytest.mark.integration

READY_TIMEOUT = 120.0  # first start runs initdb and migrations: slow on a 2-core machine
STOP_BUDGET = 10.0


def free_port_block(size: int) -> int:
    """First of `size` consecutive free loopback ports (ingest, profile, journey, messaging),
    below the kernel's ephemeral range: a port from that range (what `free_port` hands out)
    can meanwhile become the local end of any outgoing connection, and binding it then fails
    (a squatter test once met EADDRINUSE that way)."""
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(200):
        first = rng.randrange(10_000, low - size)
        if all(_is_free(first + i) for i in range(size)):
            return first
    raise RuntimeError(f"no block of {size} free ports found")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _is_free(port: int) -> bool:
    """Nothing listens on it and it can be bound (no connection holds it either)."""
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def embedded_env() -> dict[str, str]:
    """The caller's environment minus everything that would make `up` use external servers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHPOINT_")}
    return env | {"PYTHONUNBUFFERED": "1"}


class Up:
    """A `touchpoint up` child process and what it started."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log_path = workdir / "up.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pick_ports()

    def pick_ports(self) -> None:
        # The console takes the port before ingest's.
        self.ports_from = free_port_block(len(APPS) + len(SERVICES)) + len(APPS)
        block = range(self.ports_from - len(APPS), self.ports_from + len(SERVICES))
        pg_port = kafka_port = self.ports_from
        while pg_port in block:
            pg_port = free_port()
        while kafka_port in block or kafka_port == pg_port:
            kafka_port = free_port()
        self.smtp_port = free_port()
        while self.smtp_port in block or self.smtp_port in (pg_port, kafka_port):
            self.smtp_port = free_port()
        self.argv = [sys.executable, "-m", "touchpoint.cli", "up",
                     "--ports-from", str(self.ports_from), "--pg-port", str(pg_port),
                     "--kafka-port", str(kafka_port), "--smtp-port", str(self.smtp_port),
                     "--ready-timeout", str(READY_TIMEOUT)]

    @property
    def urls(self) -> list[str]:
        # The four services in order, then the console (the port before ingest's).
        return [*(f"http://127.0.0.1:{self.ports_from + i}" for i in range(len(SERVICES))),
                f"http://127.0.0.1:{self.ports_from - 1}"]

    def start(self) -> None:
        for _attempt in range(3):
            with self.log_path.open("wb") as log:
                self.proc = subprocess.Popen(self.argv, cwd=self.workdir, env=embedded_env(),
                                             stdout=log, stderr=subprocess.STDOUT,
                                             start_new_session=True)
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                return  # past the port checks
            if "ports in use" not in self.log():
                return  # failed for another reason: wait_until_ready reports it
            self.pick_ports()  # something else on this machine took a port meanwhile

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until_ready(self, urls: list[str] | None = None) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT
        pending = {f"{url}{path}" for url in urls or self.urls for path in ("/healthz", "/readyz")}
        with httpx.Client(timeout=3.0, trust_env=False) as http:
            while pending and time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    pytest.fail(f"`touchpoint up` exited early ({self.proc.returncode}):\n"
                                f"{self.log()[-4000:]}")
                for url in sorted(pending):
                    try:
                        if http.get(url).status_code == 200:
                            pending.discard(url)
                    except httpx.HTTPError:
                        pass
                time.sleep(0.5)
        assert not pending, f"not ready after {READY_TIMEOUT}s: {pending}\n{self.log()[-4000:]}"

    def started_processes(self) -> list[psutil.Process]:
        """Everything `up` runs: its process tree, and the postmaster (pg_ctl daemonizes it)."""
        assert self.proc is not None
        family = psutil.Process(self.proc.pid).children(recursive=True)
        pid_file = self.workdir / ".touchpoint" / "pgdata" / "postmaster.pid"
        postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
        return [*family, postmaster, *postmaster.children(recursive=True)]


def still_running(processes: list[psutil.Process]) -> list[str]:
    """Those not gone after a moment; a zombie has exited (only its parent has to reap it)."""
    _gone, alive = psutil.wait_procs(processes, timeout=2)
    left = []
    for proc in alive:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{proc.pid} {' '.join(proc.cmdline())}")
        except psutil.NoSuchProcess:
            pass
    return left


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    runner = Up(tmp_path)
    yield runner
    # Whatever the test did, leave nothing running on this machine.
    if runner.proc is not None and runner.proc.poll() is None:
        os.killpg(runner.proc.pid, signal.SIGKILL)
        runner.proc.wait()


def test_up_runs_the_stack_and_stops_everything_on_sigterm(up: Up) -> None:
    up.start()
    up.wait_until_ready()
    assert up.proc is not None
    started = up.started_processes()
    names = " ".join(" ".join(p.cmdline()) for p in started)
    assert "tansu" in names and "postgres" in names
    for service in (*SERVICES, *APPS):
        assert f"serve {service}" in names
    # The summary table has the console's URL.
    assert re.search(rf"console\W+http://127\.0\.0\.1:{up.ports_from - 1}\b", up.log())
    assert "touchpoint.mailcatcher" in names

    # No SMTP server configured: the dev mail catcher keeps what the services send.
    with smtplib.SMTP("127.0.0.1", up.smtp_port, timeout=10) as smtp:
        smtp.sendmail("a@example.com", ["b@example.com"], b"Subject: hi\r\n\r\nhello\r\n")
    saved = list((up.workdir / ".touchpoint" / "mail").glob("*.eml"))
    assert len(saved) == 1 and b"hello" in saved[0].read_bytes()
    assert "b@example.com" not in up.log()  # recipients are personal data: never logged

    # Generated keys are kept for the next start, readable by their owner only.
    keys_file = up.workdir / ".touchpoint" / "keys.json"
    keys = json.loads(keys_file.read_text())
    assert keys["write_key"] and keys["admin_key"]
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    # This output goes to a file, not a terminal: keys are named there, never written out.
    assert keys["admin_key"] not in up.log() and keys["admin_key"][:10] in up.log()
    assert keys["write_key"] not in up.log()
    # The installation secret: generated once, owner-only, never in the output.
    secret_file = up.workdir / ".touchpoint" / "secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_text().split()[0]
    assert len(secret) >= 32 and secret not in up.log()

    # A service that dies is restarted, and `up` says so.
    journey = next(p for p in started if "serve journey" in " ".join(p.cmdline()))
    journey.kill()
    journey.wait(10)
    up.wait_until_ready([up.urls[SERVICES.index("journey")]])
    assert "journey was killed by SIGKILL" in up.log()
    started = up.started_processes()

    second = subprocess.run(up.argv, cwd=up.workdir, env=embedded_env(), capture_output=True,
                            text=True, timeout=60)
    assert second.returncode != 0
    assert "already running" in second.stdout + second.stderr
    assert str(up.proc.pid) in second.stdout + second.stderr

    up.proc.send_signal(signal.SIGTERM)
    began = time.monotonic()
    up.proc.wait(timeout=STOP_BUDGET + 5)
    took = time.monotonic() - began
    assert took < STOP_BUDGET, f"stopping took {took:.1f}s\n{up.log()[-3000:]}"
    assert up.proc.returncode == 0, up.log()[-3000:]
    left = still_running(started)
    assert not left, f"left running: {left}"


def test_up_names_the_process_holding_a_port(up: Up) -> None:
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", up.ports_from))
        squatter.listen()
        result = subprocess.run(up.argv, cwd=up.workdir, env=embedded_env(),
                                capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"port {up.ports_from} (ingest HTTP API) is taken by pid {os.getpid()}" in output


def test_keys_survive_a_restart(tmp_path: Path) -> None:
    from touchpoint.embedded import resolve_keys

    first = resolve_keys(tmp_path, {})
    again = resolve_keys(tmp_path, {})
    assert {k: v.value for k, v in first.items()} == {k: v.value for k, v in again.items()}
    assert {v.source for v in first.values()} == {"generated"}
    assert {v.source for v in again.values()} == {"stored"}
    from_env = resolve_keys(tmp_path, {"TOUCHPOINT_BOOTSTRAP_ADMIN_KEY": "env-admin-key"})
    assert from_env["admin"].value == "env-admin-key"
    assert "env-admin-key" not in (tmp_path / "keys.json").read_text()
