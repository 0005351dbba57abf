"""Topic messages are UTF-8 JSON (orjson) with a few string headers."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from pydantic import BaseModel

Headers = list[tuple[str, bytes]]


def encode(message: BaseModel) -> bytes:
    return orjson.dumps(message.model_dump(mode="json", exclude_none=True))


def headers_for(message: BaseModel, topic_short: str, version: int = 1) -> Headers:
    """Headers let a reader route or filter without parsing the body."""
    msg_id = str(getattr(message, "id", ""))
    return [
        ("content-type", b"application/json"),
        ("schema", f"{topic_short}/v{version}".encode()),
        ("message-id", msg_id.encode()),
    ]


def header(headers: Sequence[tuple[str, bytes]] | None, name: str) -> str | None:
    for key, value in headers or ():
        if key == name:
            return value.decode(errors="replace")
    return None
