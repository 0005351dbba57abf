"""Topic messages are UTF-8 JSON (orjson) with a few string headers."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from pydantic import BaseModel

Headers = list[tuple[str, bytes]]


def encode(message: BaseModel) -> bytes:
    return orjson.dumps(message.model_dump(mode="json", exclude_none=True))


def header_pairs(topic_short: str, message_id: str, version: int = 1) -> Headers:
    """Every message's headers: they let a reader route or filter without parsing the body.
    The one place they are built (the outbox stores them as `headers_json`)."""
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
    """`header_pairs` of a contract model (its `id` is the message id)."""
    return header_pairs(topic_short, str(getattr(message, "id", "")), version)


def header(headers: Sequence[tuple[str, bytes]] | None, name: str) -> str | None:
    for key, value in headers or ():
        if key == name:
            return value.decode(errors="replace")
    return None
