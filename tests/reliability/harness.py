"""The fault suite's harness: recording providers, service subprocesses, reconciliation.

Every send is tagged (its idempotency key carries the scenario's run id), every delivery
attempt is counted at a recording SMTP server or a recording HTTP provider, and
`reconcile` compares what was accepted with what Postgres and the sinks hold.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from fastapi import FastAPI, Request, Response

from tests.support.net import free_port
from tests.support.processes import kill as kill  # re-exported for the scenarios
from tests.support.processes import serve as support_serve
from tests.support.ready import ready as ready  # re-exported for the scenarios

SOAK = os.environ.get("TOUCHPOINT_SOAK") == "1"
ROUNDS = int(os.environ.get("TOUCHPOINT_SOAK_ROUNDS", "3")) if SOAK else 1


class RecordingSmtp:
    """An SMTP server that counts every attempt. `rcpt[address]` answers RCPT with a code;
    `data[address]` is a list of DATA answers used in turn (the last one repeats); `on_data`
    runs before each answer (a scenario kills a process there)."""

    def __init__(self) -> None:
        self.rcpt: dict[str, int] = {}
        self.data: dict[str, list[int]] = {}
        self.attempts: Counter[str] = Counter()  # DATA commands per address
        self.delivered: Counter[str] = Counter()  # X-Touchpoint-Message ids answered 250
        self.received: Counter[str] = Counter()  # ids whose DATA reached us, whatever answer
        self.on_data: Callable[[int], None] | None = None
        self.delay = 0.0

    async def handle_RCPT(self, _server: Any, _session: Any, envelope: Any,  # noqa: N802
                          address: str, _options: Any) -> str:
        code = self.rcpt.get(address, 250)
        if code != 250:
            return f"{code} scripted refusal"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802
        mail = message_from_bytes(envelope.content, policy=policy.default)
        mid = str(mail["X-Touchpoint-Message"])
        to = envelope.rcpt_tos[0]
        self.attempts[to] += 1
        self.received[mid] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.on_data is not None:
            self.on_data(sum(self.received.values()))
        answers = self.data.get(to) or [250]
        code = answers.pop(0) if len(answers) > 1 else answers[0]
        if code == 250:
            self.delivered[mid] += 1
            return "250 OK"
        return f"{code} scripted answer"


@contextmanager
def recording_smtp() -> Iterator[tuple[str, RecordingSmtp]]:
    handler, port = RecordingSmtp(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{port}", handler
    finally:
        controller.stop()


class RecordingHttp:
    """An HTTP provider (Twilio-, FCM-shaped) answering from a script per target (the SMS
    `To`, else the path) and recording every request with its time."""

    def __init__(self) -> None:
        self.app = FastAPI()
        self.script: dict[str, list[tuple[int, dict[str, Any], dict[str, str]]]] = {}
        self.calls: list[tuple[str, float]] = []  # (target, monotonic time)

        @self.app.post("/{path:path}")
        async def anything(path: str, request: Request) -> Response:
            from urllib.parse import parse_qsl
            body = await request.body()
            form = dict(parse_qsl(body.decode(errors="replace")))
            key = form.get("To") if path.endswith("Messages.json") else path
            self.calls.append((str(key), asyncio.get_running_loop().time()))
            answers = self.script.get(str(key)) or [(201, {"sid": f"SM{len(self.calls)}"}, {})]
            status, payload, headers = answers.pop(0) if len(answers) > 1 else answers[0]
            import json
            return Response(json.dumps(payload), status_code=status, headers=headers,
                            media_type="application/json")

    def count(self, key: str) -> int:
        return sum(1 for k, _ in self.calls if k == key)


@dataclass
class Figures:
    """What a scenario prints: lost, duplicated, unexpected, and its bound."""

    name: str
    accepted: int
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    unknown: int = 0
    bound: str = ""

    def show(self) -> str:
        line = (f"[{self.name}] accepted={self.accepted} lost={len(self.lost)} "
                f"duplicated={len(self.duplicated)} unexpected={len(self.unexpected)} "
                f"unknown={self.unknown} {self.bound}")
        print(line)  # noqa: T201 (the suite's figures)
        return line


def reconcile(name: str, rows: dict[str, dict[str, Any]], accepted: set[str],
              delivered: Counter[str]) -> Figures:
    """`rows`: message rows by idempotency key; `accepted`: the keys sent in; `delivered`:
    250s at the sink by message id. Lost: accepted, not delivered, and not reported
    `unknown` (an unknown one may or may not have arrived: that is its meaning).
    Duplicated: a message id delivered more than once, or a key with two message ids
    delivered. Unexpected: deliveries of messages no accepted key owns."""
    f = Figures(name, len(accepted))
    owned = {r["id"]: key for key, r in rows.items()}
    for key in sorted(accepted):
        row = rows.get(key)
        if row is None or (delivered[row["id"]] == 0 and row["status"] != "unknown"):
            f.lost.append(key)
        elif delivered[row["id"]] > 1:
            f.duplicated.append(key)
        f.unknown += bool(row and row["status"] == "unknown")
    f.unexpected = [mid for mid in delivered if mid not in owned]
    return f


def _log(service: str) -> Any:
    """TOUCHPOINT_TEST_LOGS=dir keeps each subprocess's log there (for debugging)."""
    where = os.environ.get("TOUCHPOINT_TEST_LOGS")
    if not where:
        return subprocess.DEVNULL
    return open(Path(where) / f"{service}-{os.getpid()}-{free_port()}.log", "wb")  # noqa: SIM115


def serve(service: str, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """`touchpoint serve <service>`, its log kept where TOUCHPOINT_TEST_LOGS says."""
    log = _log(service)
    return support_serve(service, env, port, stderr=log, stdout=log)


