"""Round trips to Postgres per polled batch of every consumer of the whole stack.

Runs `bench/pipeline.py` with the given arguments and bench/wire_count/ on the services'
PYTHONPATH (its sitecustomize counts, in each service, the socket writes to Postgres while
a poll is handled: one per statement or round trip), then prints per consumer and topic,
by records per poll: the polls and the mean round trips per poll. Counts, not times: the
same on a loaded machine for the same batch sizes (which the load does change).

    .venv/bin/python bench/stack_round_trips.py --rate 100 --seconds 20 --runs 1 [--shape new]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUCKETS = ((1, 1), (2, 2), (3, 5), (6, 10), (11, 20), (21, 50), (51, 10**9))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="wire-") as out:
        env = {**os.environ, "WIRE_COUNT_DIR": out,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE / "wire_count"),
                                                           os.environ.get("PYTHONPATH")]))}
        code = subprocess.call([sys.executable, str(HERE / "pipeline.py"), *sys.argv[1:]],
                               env=env)
        totals: dict[tuple[str, str, int], list[int]] = {}
        for path in Path(out).glob("*.json"):
            for key, (polls, writes) in json.loads(path.read_text()).items():
                name, topics, records = key.split("\t")
                row = totals.setdefault((name, topics, int(records)), [0, 0])
                row[0] += polls
                row[1] += writes
    print("\nPostgres round trips per polled batch (socket writes while the poll is handled)")
    print(f"{'consumer':<10} {'topics':<34} {'records':>8} {'polls':>6} {'round trips':>12}")
    for name, topics in sorted({(n, t) for n, t, _ in totals}):
        for low, high in BUCKETS:
            rows = [v for (n, t, r), v in totals.items()
                    if n == name and t == topics and low <= r <= high]
            polls = sum(p for p, _ in rows)
            if polls:
                span = (str(low) if low == high else f"{low}-{high}" if high < 10**9
                        else f">{low - 1}")
                print(f"{name:<10} {topics:<34} {span:>8} {polls:>6} "
                      f"{sum(w for _, w in rows) / polls:>12.1f}")
    sys.exit(code)


if __name__ == "__main__":
    main()
