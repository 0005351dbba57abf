"""Imported first by each benchmark: puts the repository root on sys.path, so a bench run
as a script (`python bench/ingest.py`) imports `tests.support` (the test and bench helpers,
which the wheel does not ship)."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
