"""Profile's messages into its outbox, in the state change's transaction. Never commits.

What `shared.db.add_to_outbox` does, with differences that matter at thousands of messages
per second (the bytes stay those of `shared.kafka.codec.encode`: UTF-8 JSON, `None` fields
left out, pydantic's datetime text; unit tests compare them):
- the batch path never builds ProfileEvent / ProfileChange / ProfileSnapshot models: it
  writes their JSON objects with orjson, fields in the models' order. The received Event
  is encoded by pydantic's own serializer (it is a model already) and the snapshot by
  orjson, each spliced in as an `orjson.Fragment`; a profile's changes reuse the bytes of
  its last event's snapshot;
- a batch's messages for every topic go in as one statement.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from pydantic import BaseModel, TypeAdapter
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.contracts.events import Event
from shared.db.driver import driver
from shared.db.outbox import OutboxRow, written_rows
from shared.kafka.codec import with_trace

MAX_ID = 200  # the envelope's limit on a message id


def change_id(*parts: str) -> str:
    """A change's message id from what makes it unique. Deterministic, so a redelivered event
    gives the same id (consumers dedupe on it); hashed past the envelope's limit, which a
    client's 200-character event id would otherwise push it over (nothing validates the
    JSON these rows are written as)."""
    raw = ":".join(parts)
    return raw if len(raw) <= MAX_ID else "sha256:" + hashlib.sha256(raw.encode()).hexdigest()


# asyncpg directly (inside the caller's transaction): SQLAlchemy's parameter and result
# handling cost more than the statement itself. JSONB goes through the engine's codec (str).
_INSERT = ("INSERT INTO profile.outbox (topic, key, value, headers) "
           "SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::jsonb[]) RETURNING id")

_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)


class Outgoing(NamedTuple):
    """One outbox row: the message already encoded."""

    topic: str  # full topic name
    short: str  # the topic's short name, for the `schema` header
    key: bytes
    message_id: str
    value: bytes


def encode_fast(message: BaseModel) -> bytes:
    """Same bytes as `shared.kafka.codec.encode` (checked by a unit test)."""
    return message.__pydantic_serializer__.to_json(message, exclude_none=True)


def json_time(value: datetime) -> str:
    """A datetime as the shared codec writes it (pydantic's JSON text, `Z` for UTC)."""
    return str(_DATETIME.dump_python(value, mode="json"))


def profile_event_json(event_id: str, workspace_id: str, produced_at: str, profile_id: str,
                       event: Event, profile: bytes) -> bytes:
    """A ProfileEvent (schema_version 1); `profile` is the JSON of `snapshot_fields`."""
    return orjson.dumps({
        "id": event_id, "schema_version": 1, "workspace_id": workspace_id,
        "produced_at": produced_at, "profile_id": profile_id,
        "event": orjson.Fragment(encode_fast(event)), "profile": orjson.Fragment(profile)})


def profile_change_json(change_id: str, workspace_id: str, produced_at: str, profile_id: str,
                        kind: str, data: dict[str, Any], occurred_at: str,
                        profile: bytes | None) -> bytes:
    """A ProfileChange (schema_version 1); `profile` is the snapshot's JSON, or None."""
    message: dict[str, Any] = {
        "id": change_id, "schema_version": 1, "workspace_id": workspace_id,
        "produced_at": produced_at, "profile_id": profile_id, "kind": kind, "data": data,
        "occurred_at": occurred_at}
    if profile is not None:
        message["profile"] = orjson.Fragment(profile)
    return orjson.dumps(message)


def headers_json(short: str, message_id: str) -> str:
    """`shared.kafka.codec.headers_for`'s headers as the outbox stores them (JSON pairs)."""
    return orjson.dumps([["content-type", "application/json"], ["schema", f"{short}/v1"],
                         ["message-id", message_id]]).decode()


async def queue(conn: AsyncConnection, rows: Sequence[Outgoing]) -> list[OutboxRow]:
    """Queue rows in one statement, in order; returns the rows to publish after commit."""
    if not rows:
        return []
    topics, keys, values = [r.topic for r in rows], [r.key for r in rows], [r.value for r in rows]
    headers = with_trace([headers_json(r.short, r.message_id) for r in rows])
    got = await (await driver(conn)).fetch(_INSERT, topics, keys, values, headers)
    return written_rows([r[0] for r in got], topics, keys, values, headers)
