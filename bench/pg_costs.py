"""What one Postgres round trip and one array parameter element cost, in CPU: the unit
prices behind the services' per-batch statements (docs/performance.md, stop 27).

For each case, `--calls` asyncpg `fetch` calls of one prepared statement on one connection
(after a warm-up), three times; the median of the three per call: this process's CPU
(`time.process_time`: asyncpg's encoding, the protocol, the event loop) and the backend's
(`/proc/<pid>/schedstat`: nanoseconds on a CPU; the server must be local). Cases: `SELECT 1`
(the round trip alone), then 1,000-element arrays of text, text joined by the unit
separator and split in SQL (repository.unnest_args), int, date, float8 and timestamptz;
per element = (case - round trip) / 1,000.

    .venv/bin/python bench/pg_costs.py [--calls 200]
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import _root  # noqa: F401  (the repository root on sys.path: tests.support)
import asyncpg

from tests.support.options import bench_options
from tests.support.postgres import postgres_server

SEP = chr(31)
N = 1000


def _cases() -> list[tuple[str, str, Callable[[], tuple[Any, ...]]]]:
    texts = [f"0b1c2d3e-{i:04d}-4a5b-8c9d-0e1f2a3b4c5d" for i in range(N)]
    joined = SEP.join(texts)
    ints = list(range(N))
    days = [date(2026, 12, 1) + timedelta(days=i % 3) for i in range(N)]
    floats = [float(i % 7) for i in range(N)]
    now = datetime.now(UTC)
    stamps = [now + timedelta(seconds=i) for i in range(N)]
    return [
        ("round trip (SELECT 1)", "SELECT 1", lambda: ()),
        ("text[]", "SELECT cardinality($1::text[])", lambda: (texts,)),
        ("text joined, split in SQL", "SELECT cardinality(string_to_array($1, chr(31)))",
         lambda: (joined,)),
        ("int[]", "SELECT cardinality($1::int[])", lambda: (ints,)),
        ("date[]", "SELECT cardinality($1::date[])", lambda: (days,)),
        ("float8[]", "SELECT cardinality($1::float8[])", lambda: (floats,)),
        ("timestamptz[]", "SELECT cardinality($1::timestamptz[])", lambda: (stamps,)),
    ]


def _backend_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


async def main(calls: int) -> None:
    with postgres_server() as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            pid = conn.get_server_pid()
            results: dict[str, tuple[float, float]] = {}
            for label, sql, args in _cases():
                for _ in range(20):
                    await conn.fetch(sql, *args())
                runs = []
                for _ in range(3):
                    backend, cpu = _backend_ns(pid), time.process_time()
                    for _ in range(calls):
                        await conn.fetch(sql, *args())
                    runs.append(((time.process_time() - cpu) / calls * 1e6,
                                 (_backend_ns(pid) - backend) / calls / 1e3))
                results[label] = (statistics.median(r[0] for r in runs),
                                  statistics.median(r[1] for r in runs))
        finally:
            await conn.close()
    base_client, base_backend = results["round trip (SELECT 1)"]
    print(f"CPU per asyncpg call, median of 3 x {calls} calls (us): this process + the backend")
    for label, (client, backend) in results.items():
        line = f"  {label:<27} {client:8.1f} + {backend:7.1f} = {client + backend:8.1f}"
        if label != "round trip (SELECT 1)":
            per = (client - base_client + backend - base_backend) / N
            line += (f"   per element {(client - base_client) / N:5.2f} + "
                     f"{(backend - base_backend) / N:5.2f} = {per:5.2f}")
        print(line)


if __name__ == "__main__":
    args = bench_options(__doc__, calls=200).parse_args()
    asyncio.run(main(args.calls))
