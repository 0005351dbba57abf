"""Topic messages are UTF-8 JSON (orjson) with a few string headers."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from pydantic import BaseModel

from shared import tracing

Headers = list[tuple[str, bytes]]


def encode(message: BaseModel) -> bytes:
    return orjson.dumps(message.model_dump(mode="json", exclude_none=True))


def header_pairs(topic_short: str, message_id: str, version: int = 1) -> Headers:
    """Every message's headers: they let a reader route or filter without parsing the body.
    The one place they are built (`headers_json` as the outbox stores them); the current
    `traceparent` is added by `headers_for`, ingest's producer and the outbox's `queue`."""
    return [
        ("content-type", b"application/json"),
        ("schema", f"{topic_short}/v{version}".encode()),
        ("message-id", message_id.encode()),
    ]


def headers_json(topic_short: str, message_id: str, version: int = 1) -> str:
    """`header_pairs` as the outbox's `headers` column holds them: JSON [[name, value], ...]."""
    return orjson.dumps([["content-type", "application/json"],
                         ["schema", f"{topic_short}/v{version}"],
                         ["message-id", message_id]]).decode()


def headers_for(message: BaseModel, topic_short: str, version: int = 1) -> Headers:
    """`header_pairs` of a contract model (its `id` is the message id), with the current
    `traceparent` when tracing is on."""
    headers = header_pairs(topic_short, str(getattr(message, "id", "")), version)
    return headers + trace_headers() if tracing.enabled() else headers


def trace_headers() -> Headers:
    """The current span's W3C `traceparent` ([] when tracing is off: shared/tracing.py)."""
    return tracing.current_headers()


def with_trace(headers_json: list[str]) -> list[str]:
    """Outbox rows' stored headers (JSON arrays of pairs, as the fast writers make them)
    with the current `traceparent` added, once: the relay publishes them as stored. The
    same list, untouched, when tracing is off."""
    if not tracing.enabled() or not (extra := trace_headers()):
        return headers_json
    name, value = extra[0]
    pair = f',["{name}","{value.decode()}"]]'
    return [h[:-1] + pair if h.endswith("]") and h != "[]" and f'"{name}"' not in h else h
            for h in headers_json]


def header(headers: Sequence[tuple[str, bytes]] | None, name: str) -> str | None:
    for key, value in headers or ():
        if key == name:
            return value.decode(errors="replace")
    return None
