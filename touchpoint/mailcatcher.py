"""A development SMTP server for `touchpoint up`: keeps every message as an .eml file.

    python -m touchpoint.mailcatcher --port 1025 --dir .touchpoint/mail

It relays nothing. It logs one line per message with its file name and size, never the
recipients or the content (they are personal data); open the file to read the email.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP


class SaveToFolder:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        start = len(list(folder.glob("*.eml"))) + 1
        self._numbers = itertools.count(start)

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802
        path = self.folder / f"{next(self._numbers):06d}.eml"
        path.write_bytes(envelope.original_content or envelope.content)
        print(f"mail saved: {path} ({len(envelope.content)} bytes)", flush=True)
        return "250 OK"


async def serve(host: str, port: int, folder: Path) -> None:
    handler = SaveToFolder(folder)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler, hostname="touchpoint-dev"),
                                      host, port)
    print(f"dev mail catcher on smtp://{host}:{port}, saving to {folder}/", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--dir", type=Path, default=Path(".touchpoint/mail"))
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(serve(args.host, args.port, args.dir))


if __name__ == "__main__":
    main()
