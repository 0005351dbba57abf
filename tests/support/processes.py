"""Child processes of tests and benchmarks that do not outlive them."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """`preexec_fn` for Popen: the child gets SIGTERM when the process that started it dies.

    A test run or benchmark killed by a timeout never reaches its `finally`, and a broker
    or service left behind keeps burning CPU on a 2-core machine for the runs after it.
    Linux only (prctl); elsewhere a no-op.
    """
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def serve(service: str, env: dict[str, str], port: int,
          stderr: IO[bytes] | int = subprocess.DEVNULL,
          stdout: IO[bytes] | int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    """`touchpoint serve <service>` as a subprocess in its own session (SIGKILL-able). Its
    log goes to stdout (`shared.logging`)."""
    exe = Path(sys.executable).parent / "touchpoint"
    return subprocess.Popen([str(exe), "serve", service, "--port", str(port)], env=env,
                            stdout=stdout, stderr=stderr, start_new_session=True)


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL: no shutdown hook runs, as when a machine dies."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
