"""A loopback TCP proxy a test can cut and restore: a real outage of a real server."""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target_host:target_port`.

    `cut()` drops every connection and stops listening (clients see resets, then
    connection refused); `restore()` listens on the same port again. `latency` (seconds,
    changeable at any time) holds each chunk from the client that long before it goes
    upstream, without holding the chunks behind it: a slow server or link, every round
    trip that much longer, throughput unchanged.
    """

    def __init__(self, target_host: str, target_port: int, port: int) -> None:
        self.target = (target_host, target_port)
        self.port = port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.latency = 0.0

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port,
                                                  reuse_address=True)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer, delayed=True),
                             self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    delayed: bool = False) -> None:
        loop = asyncio.get_running_loop()
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def release() -> None:  # in arrival order, each at its own time
            with contextlib.suppress(OSError):
                while True:
                    due, data = await held.get()
                    if not data:
                        return
                    await asyncio.sleep(max(0.0, due - loop.time()))
                    writer.write(data)
                    await writer.drain()

        releasing = asyncio.create_task(release()) if delayed else None
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if releasing is not None:
                    held.put_nowait((loop.time() + self.latency, data))
                    continue
                writer.write(data)
                await writer.drain()
        if releasing is not None:
            held.put_nowait((loop.time() + self.latency, b""))
            with contextlib.suppress(OSError):
                await releasing
        writer.transport.abort()
        self._writers.discard(writer)
