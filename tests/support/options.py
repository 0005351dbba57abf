"""A benchmark's command line: its docstring's first line as the description, and one
integer option per count it takes."""

from __future__ import annotations

import argparse


def bench_options(doc: str | None, **counts: int) -> argparse.ArgumentParser:
    """`--a-b N` (an int, default `counts["a_b"]`) per keyword; add the others to it."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    for name, default in counts.items():
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=default)
    return parser
