"""Test-only crash points: hard-exit the process at a named place, on its N-th pass.

    TOUCHPOINT_FAULT_INJECT=<point>:<n>[,<point>:<n>...]   (and TOUCHPOINT_ENV=test)

makes the n-th pass through `crash_point(point)` end the process with `os._exit(FAULT_EXIT)`:
no `finally`, no flush, no offset commit, as when a machine dies. The fault suite
(`tests/reliability/test_injected_crashes.py`) uses it to crash a running service exactly
between a database commit and the produce that follows it, and the reverse. Outside
`TOUCHPOINT_ENV=test` the variable is ignored; unset, a crash point is one truth test of
an empty dict.

Points:
- `after_commit_before_produce`: the outbox rows are committed with their state change,
  nothing of them is produced yet (`OutboxRelay.publish`, before the send);
- `after_produce_before_commit`: the broker acked the rows, the database has not recorded
  it (the relay's delete, or the sweeper's transaction, is not committed);
- `before_offset_commit`: a consumer's effects are committed (and their outbox handed to the
  relay), its offsets are not (`ConsumerLoop`, before the commit).
"""

from __future__ import annotations

import os
import sys
from collections import Counter

POINTS = frozenset({"after_commit_before_produce", "after_produce_before_commit",
                    "before_offset_commit"})
FAULT_EXIT = 86  # the exit status a crash point ends the process with


def parse(spec: str) -> dict[str, int]:
    """`point:n,point:n` -> {point: n}; an unknown point or a bad n is an error, so a typo
    in a test never passes for a crash that did not happen."""
    plan: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        point, _, n = part.partition(":")
        if point not in POINTS or not n.isdigit() or int(n) < 1:
            raise ValueError(f"TOUCHPOINT_FAULT_INJECT: bad entry {part!r} "
                             f"(points: {', '.join(sorted(POINTS))}; n >= 1)")
        plan[point] = int(n)
    return plan


_PLAN = parse(os.environ.get("TOUCHPOINT_FAULT_INJECT", "")) \
    if os.environ.get("TOUCHPOINT_ENV") == "test" else {}
_passes: Counter[str] = Counter()


def crash_point(point: str) -> None:
    """Exit here if the plan says this pass is the one (test only; see the module doc)."""
    if _PLAN and point in _PLAN:
        _passes[point] += 1
        if _passes[point] == _PLAN[point]:
            sys.stderr.write(f"fault injected: {point} (pass {_passes[point]})\n")
            sys.stderr.flush()
            os._exit(FAULT_EXIT)
