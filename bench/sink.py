"""A minimal SMTP sink in its own process, for the pipeline bench: it speaks just enough
SMTP for aiosmtplib (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) and records, per
message, the first recipient and the wall-clock time the DATA terminator arrived.

It parses nothing else, so it costs a small fraction of what aiosmtpd does per email and
leaves the cores to the stack being measured. Every 100 ms it appends what it received to
`--out` as lines `recipient<TAB>time_ns`.

    python bench/sink.py --port 2525 --out /tmp/sink.tsv
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time

import _root  # noqa: F401  (the repository root on sys.path: tests.support)

from tests.support.loop import run_fast

_EHLO = (b"250-sink\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-SIZE 10485760\r\n"
         b"250 PIPELINING\r\n")


class Sink(asyncio.Protocol):
    received: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""
        self.in_data = False
        self.rcpt: str | None = None
        transport.write(b"220 sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.in_data:
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0:
                    # keep the tail that may hold a split terminator
                    return
                self.buffer = self.buffer[end + 5:]
                self.in_data = False
                Sink.received.append(f"{self.rcpt}\t{time.time_ns()}\n")
                self.rcpt = None
                self.transport.write(b"250 OK\r\n")
                continue
            line_end = self.buffer.find(b"\r\n")
            if line_end < 0:
                return
            line, self.buffer = self.buffer[:line_end], self.buffer[line_end + 2:]
            self._command(line)

    def _command(self, line: bytes) -> None:
        verb = line[:4].upper()
        if verb == b"EHLO":
            self.transport.write(_EHLO)
        elif verb == b"RCPT":
            if self.rcpt is None:
                self.rcpt = line.split(b":", 1)[1].split(b">", 1)[0].strip(b" <").decode()
            self.transport.write(b"250 OK\r\n")
        elif verb == b"DATA":
            self.in_data = True
            self.transport.write(b"354 go ahead\r\n")
        elif verb == b"QUIT":
            self.transport.write(b"221 bye\r\n")
            self.transport.close()
        else:  # HELO, MAIL, RSET, NOOP
            self.transport.write(b"250 OK\r\n")


async def main(port: int, out: str) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = await loop.create_server(Sink, "127.0.0.1", port, backlog=512)
    with open(out, "a") as file:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 0.1)
            except TimeoutError:
                pass
            if Sink.received:
                lines, Sink.received = Sink.received, []
                file.write("".join(lines))
                file.flush()
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    run_fast(main(args.port, args.out))
