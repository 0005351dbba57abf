"""The playbooks ship in the wheel and load from it, whatever the working directory."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from touchpoint.playbooks import NAMES

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]


def test_an_installed_wheel_finds_every_playbook(tmp_path: Path) -> None:
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
                            "-q", "-w", str(tmp_path / "dist")], capture_output=True, text=True,
                           timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("touchpoint-*.whl"))
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = ("import touchpoint.playbooks as p; print(p.__file__); "
             "print(','.join(p.names())); "
             "print(sum(len(p.load(n).templates) for n in p.names()))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, capture_output=True,
                         text=True, timeout=60, env={"PYTHONPATH": str(site),
                                                     "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    where, found, templates = out.stdout.split()
    assert where.startswith(str(site)), "loaded from the wheel, not the checkout"
    assert found.split(",") == list(NAMES)
    assert int(templates) >= len(NAMES)
