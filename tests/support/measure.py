"""What the benches measure across processes: CPU seconds per group of processes, and a
service's consumed-messages counter."""

from __future__ import annotations

import os

import asyncpg
import httpx
import psutil


def processes(named: dict[str, list[int]], this: str = "bench") -> dict[str, list[psutil.Process]]:
    """The named processes, Postgres (every backend of the local server, so another user's
    queries would count too), the Tansu brokers this process started, and this process
    itself under `this`."""
    found = {name: [psutil.Process(pid) for pid in pids] for name, pids in named.items()}
    found["postgres"], found["tansu"] = [], []
    for proc in psutil.process_iter(["name"]):
        name = proc.info["name"] or ""
        if name == "postgres":
            found["postgres"].append(proc)
        elif name.startswith("tansu") and proc.ppid() == os.getpid():
            found["tansu"].append(proc)
    found[this] = [psutil.Process()]
    return found


def process_cpu(pid: int) -> float:
    """User + system CPU seconds one local process has used so far (Linux /proc; 0 once
    it is gone). Per operation it says what a process costs even when others share the
    cores."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(groups: dict[str, list[psutil.Process]]) -> dict[str, float]:
    """User + system CPU seconds each group has spent so far (processes gone count 0)."""
    total: dict[str, float] = {}
    for name, procs in groups.items():
        total[name] = 0.0
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total[name] += times.user + times.system
    return total


def cpu_delta(groups: dict[str, list[psutil.Process]], seconds_before: dict[int, float]
              ) -> dict[str, float]:
    """CPU seconds each group spent since `seconds_before` (from `cpu_of`). A process not in
    `seconds_before` started since and counts whole (a backend a pool opened meanwhile);
    one that ended is left out instead of counting its whole life negative."""
    after = cpu_of(groups)
    return {name: sum(after[p.pid] - seconds_before.get(p.pid, 0.0) for p in procs
                      if p.pid in after)
            for name, procs in groups.items()}


def cpu_of(groups: dict[str, list[psutil.Process]]) -> dict[int, float]:
    """User + system CPU seconds per process id so far."""
    out = {}
    for procs in groups.values():
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            out[proc.pid] = times.user + times.system
    return out


async def database_postgres(database_url: str) -> dict[str, list[psutil.Process]]:
    """The Postgres processes of one database: "postgres", its backends, and "postgres-bg",
    the server's background processes (checkpointer, WAL writer, ...; these also work for
    other databases). On a machine shared with other users' tests these are the stack's
    Postgres, not theirs."""
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT pid, backend_type = 'client backend' FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND "
            "(datname = current_database() OR backend_type <> 'client backend')")
    finally:
        await conn.close()
    found: dict[str, list[psutil.Process]] = {"postgres": [], "postgres-bg": []}
    for pid, client in rows:
        try:
            found["postgres" if client else "postgres-bg"].append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    return found


async def consumed(http: httpx.AsyncClient, url: str, consumer: str) -> float:
    """The service's `touchpoint_consumed_messages_total` for one consumer."""
    for line in (await http.get(f"{url}/metrics")).text.splitlines():
        if line.startswith(f'touchpoint_consumed_messages_total{{consumer="{consumer}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
