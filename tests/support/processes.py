"""Child processes of tests and benchmarks that do not outlive them."""

from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """`preexec_fn` for Popen: the child gets SIGTERM when the process that started it dies.

    A test run or benchmark killed by a timeout never reaches its `finally`, and a broker
    or service left behind keeps burning CPU on a 2-core machine for the runs after it.
    Linux only (prctl); elsewhere a no-op.
    """
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
