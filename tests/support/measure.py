"""What the benches measure across processes: CPU seconds per group of processes, and a
service's consumed-messages counter."""

from __future__ import annotations

import os

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


async def consumed(http: httpx.AsyncClient, url: str, consumer: str) -> float:
    """The service's `touchpoint_consumed_messages_total` for one consumer."""
    for line in (await http.get(f"{url}/metrics")).text.splitlines():
        if line.startswith(f'touchpoint_consumed_messages_total{{consumer="{consumer}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
