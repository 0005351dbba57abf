"""Open-loop HTTP load for the pipeline bench, in its own process.

Reads a plan (JSON): ingest base URLs, the write key, the rate, and per customer the
requests to send in order (`identify` then `track`, or `track` only). Every request is
encoded to bytes before the clock starts; customer i is due at `start + i / rate` and is
timed from that moment, not from when a connection was free (so a stack that falls
behind shows it as latency, never as a slower offered rate). Requests go over persistent
HTTP/1.1 connections, one customer's requests in order on one connection.

Writes `--out`: `#cpu SECONDS` (its CPU while sending), then one line per customer:
`user<TAB>due_ns<TAB>first_status<TAB>last_status`.

    python bench/loadgen.py --plan plan.json --out sent.tsv
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import resource
import time
from urllib.parse import urlsplit

import _root  # noqa: F401  (the repository root on sys.path: tests.support)
import orjson

from tests.support.loop import run_fast

MAX_CONNECTIONS = 256


def encode(host: str, path: str, auth: str, body: dict[str, object]) -> bytes:
    payload = orjson.dumps(body)
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {auth}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
            ).encode() + payload


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def request(self, raw: bytes) -> int:
        self.writer.write(raw)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await self.reader.readexactly(length)
        if not status_line:
            raise ConnectionResetError("closed by the server")
        return int(status_line.split(b" ", 2)[1])


class Pool:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[Connection] = []
        self.open = 0
        self.freed = asyncio.Condition()

    async def take(self, fresh: bool = False) -> Connection:
        """An idle kept-alive connection, or a new one (`fresh`: always a new one; an idle
        connection may be one the server has closed meanwhile, after its keep-alive timeout)."""
        async with self.freed:
            while True:
                if self.idle and not fresh:
                    return self.idle.pop()
                if self.open < MAX_CONNECTIONS:
                    break
                if self.idle:  # a fresh one wanted and the pool full: the oldest idle goes
                    self.idle.pop(0).writer.close()
                    self.open -= 1
                    break
                await self.freed.wait()
            self.open += 1
        return Connection(*await asyncio.open_connection(self.host, self.port))

    async def give(self, conn: Connection | None) -> None:
        async with self.freed:
            if conn is None:
                self.open -= 1
            else:
                self.idle.append(conn)
            self.freed.notify()


_BROKEN = (OSError, RuntimeError, asyncio.IncompleteReadError, ValueError, IndexError)


async def customer(pool: Pool, requests: list[bytes], user: str, due: int,
                   results: list[str]) -> None:
    statuses: list[int] = []
    conn: Connection | None = None
    for attempt in range(2):  # a kept-alive connection the server closed: once more, fresh
        conn = await pool.take(fresh=attempt > 0)
        try:
            while len(statuses) < len(requests):
                statuses.append(await conn.request(requests[len(statuses)]))
            break
        except _BROKEN:
            conn.writer.close()
            await pool.give(None)
            conn = None
    if conn is None:
        statuses += [0] * (len(requests) - len(statuses))
    else:
        await pool.give(conn)
    results.append(f"{user}\t{due}\t{statuses[0]}\t{statuses[-1]}\n")


async def main(plan_path: str, out: str) -> None:
    plan = orjson.loads(open(plan_path, "rb").read())
    auth = base64.b64encode(f"{plan['write_key']}:".encode()).decode()
    pools = []
    for url in plan["ingest_urls"]:
        parts = urlsplit(url)
        pools.append((Pool(parts.hostname or "127.0.0.1", parts.port or 80), parts.netloc))
    encoded = []
    for i, item in enumerate(plan["customers"]):
        pool, netloc = pools[i % len(pools)]
        encoded.append((pool, item["user"], [encode(netloc, f"/v1/{kind}", auth, body)
                                             for kind, body in item["requests"]]))
    rate = plan["rate"]
    before = resource.getrusage(resource.RUSAGE_SELF)  # CPU counted from here: sending only
    start = time.time_ns() + 200_000_000
    results: list[str] = []
    tasks = []
    for i, (pool, user, requests) in enumerate(encoded):
        due = start + int(i * 1e9 / rate)
        delay = (due - time.time_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(customer(pool, requests, user, due, results)))
    await asyncio.gather(*tasks)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
    with open(out, "w") as file:
        file.write(f"#cpu {cpu}\n" + "".join(results))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--plan", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    run_fast(main(args.plan, args.out))
