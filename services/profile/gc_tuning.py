"""The profile process's garbage-collector setting.

A batch of 500 events allocates hundreds of thousands of small containers (models, dicts,
lists) that reference counting frees at once; with CPython's default threshold (a young
collection every 700 net allocations) the cyclic collector still ran ~30 times per batch
and took 15-20 % of the consumer's time in bench/profile.py. A young generation larger than
what one batch holds at once lets a batch's garbage die before a collection looks at it.
20,000 did until the KPI rollups: a batch noting them holds more at its peak (its facts,
the rollup's keys, the statements' rows), crossed 20,000 in ~1 batch of 7 and paid a young
collection of ~6 ms each time (1.8-1.9 us per event in bench/profile.py --rollups compare,
where the same batches without the rollups paid none). At 50,000: one collection in 40
batches. Older generations keep CPython's ratios. Memory cost: at most 50,000 cyclic
objects (a few MB) waiting a little longer.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Applied once at process start (create_app); process-wide, idempotent."""
    young, older, oldest = gc.get_threshold()
    gc.set_threshold(max(YOUNG_THRESHOLD, young), older, oldest)
