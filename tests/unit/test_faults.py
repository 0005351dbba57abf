"""The test-only crash points: parsed strictly, inert unless TOUCHPOINT_ENV=test, exit on the
n-th pass exactly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared.faults import FAULT_EXIT, parse

SCRIPT = ("from shared.faults import crash_point\n"
          "for n in range(1, 6):\n"
          "    print(n, flush=True)\n"
          "    crash_point('before_offset_commit')\n")


def test_parse_reads_points_and_passes() -> None:
    assert parse("") == {}
    assert parse("after_commit_before_produce:2, before_offset_commit:1") == {
        "after_commit_before_produce": 2, "before_offset_commit": 1}


@pytest.mark.parametrize("spec", ["nowhere:1", "before_offset_commit", "before_offset_commit:0",
                                  "before_offset_commit:x"])
def test_parse_refuses_what_would_never_crash(spec: str) -> None:
    with pytest.raises(ValueError, match="TOUCHPOINT_FAULT_INJECT"):
        parse(spec)


def _run(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("TOUCHPOINT_ENV", "TOUCHPOINT_FAULT_INJECT")}
    return subprocess.run([sys.executable, "-c", SCRIPT], env={**clean, **env},
                          capture_output=True, text=True, timeout=30, check=False)


def test_the_nth_pass_exits_at_once() -> None:
    done = _run(TOUCHPOINT_ENV="test", TOUCHPOINT_FAULT_INJECT="before_offset_commit:3")
    assert done.returncode == FAULT_EXIT
    assert done.stdout.split() == ["1", "2", "3"]
    assert "fault injected: before_offset_commit (pass 3)" in done.stderr


def test_ignored_outside_the_test_environment() -> None:
    done = _run(TOUCHPOINT_ENV="prod", TOUCHPOINT_FAULT_INJECT="before_offset_commit:3")
    assert done.returncode == 0 and done.stdout.split() == ["1", "2", "3", "4", "5"]
