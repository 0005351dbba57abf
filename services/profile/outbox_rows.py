"""Profile's messages into its outbox, in the state change's transaction. Never commits.

What `shared.db.add_to_outbox` does, with one difference that matters at thousands of
messages per second: each message is encoded by pydantic's own serializer straight to JSON
bytes (`to_json`), not dumped to Python dicts first and then re-encoded by orjson. The bytes
are the same (UTF-8 JSON, `None` fields left out, same datetime text), at about half the cost.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from services.profile.tables import outbox
from shared.db.bulk import insert_unnest
from shared.kafka.codec import headers_for

_TYPES = {"topic": "text", "key": "bytea", "value": "bytea", "headers": "jsonb"}


def encode_fast(message: BaseModel) -> bytes:
    """Same bytes as `shared.kafka.codec.encode` (checked by a unit test)."""
    return message.__pydantic_serializer__.to_json(message, exclude_none=True)


async def queue(conn: AsyncConnection, topic: str, topic_short: str,
                messages: Sequence[tuple[bytes, BaseModel]]) -> list[int]:
    """Queue (key, message) pairs for `topic`; returns the row ids to publish after commit."""
    if not messages:
        return []
    rows = [{"topic": topic, "key": key, "value": encode_fast(msg),
             "headers": orjson.dumps([[k, v.decode()] for k, v in headers_for(msg, topic_short)]
                                     ).decode()}
            for key, msg in messages]
    result = await insert_unnest(conn, outbox, _TYPES, rows, "RETURNING id")
    return list(result.scalars())
