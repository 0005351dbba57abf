"""Checks before `touchpoint up` starts anything: one `up` per state directory, free ports."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path

import psutil


class AlreadyRunning(RuntimeError):
    def __init__(self, pid: int | None) -> None:
        super().__init__(f"touchpoint up is already running (pid {pid or 'unknown'})")
        self.pid = pid


class RunLock:
    """One `up` per state directory: an flock on `up.lock`, and `up.pid` for humans and checks."""

    def __init__(self, state_dir: Path) -> None:
        self.lock_path = state_dir / "up.lock"
        self.pid_path = state_dir / "up.pid"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(self.recorded_pid()) from None
        # Some filesystems (NFS) fake flock; a live `up` in the pid file still counts.
        pid = self.recorded_pid()
        if pid is not None and pid != os.getpid() and _is_touchpoint_up(pid):
            os.close(fd)
            raise AlreadyRunning(pid)
        self._fd = fd
        self.pid_path.write_text(f"{os.getpid()}\n")

    def release(self) -> None:
        if self._fd is None:
            return
        self.pid_path.unlink(missing_ok=True)
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def recorded_pid(self) -> int | None:
        """The pid in up.pid when that process is alive."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if psutil.pid_exists(pid) else None


def _is_touchpoint_up(pid: int) -> bool:
    try:
        cmdline = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False
    return "touchpoint" in cmdline and " up" in cmdline


def port_holder(host: str, port: int) -> str | None:
    """None when host:port is free to listen on, else who holds it (as far as we can tell)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Servers set SO_REUSEADDR too, so TIME_WAIT leftovers are not a conflict.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            return None
        except OSError:
            pass
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port \
                    and conn.pid:
                cmdline = " ".join(psutil.Process(conn.pid).cmdline())
                return f"pid {conn.pid}: {cmdline[:100]}"
    return "another process"
