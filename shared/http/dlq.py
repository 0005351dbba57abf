"""`/v1/dlq` on every service: its own consumers' dead letters, listed and replayed.

Each service answers for the consumers it runs (`<service>.<name>`), reading the DLQ topic
filtered by the `dlq.consumer` header, so the operator asks the service that owns the
consumer, as for its other management routes. An admin key sees the records of its own
workspace (the value's `workspace_id`); records with none (unparseable bytes) only the
default workspace's admins.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from shared.auth import Principal
from shared.http.auth import AdminDep
from shared.http.contracts import answers
from shared.http.problems import Problem
from shared.kafka.dlq import DeadLetter, read_dead_letters, replay

router = APIRouter(prefix="/v1/dlq", tags=["dead letters"])


class DeadLetterOut(BaseModel):
    partition: int = Field(description="Where it sits in the DLQ topic.")
    offset: int
    consumer: str
    topic: str = Field(description="The topic it was read from; a replay sends it there.")
    source_partition: int | None
    source_offset: int | None
    error: str
    error_type: str
    at: datetime | None
    key: str | None
    value: str | None = Field(description="The original bytes as text (first 4000).")


class DeadLetters(BaseModel):
    items: list[DeadLetterOut]


class RecordRef(BaseModel):
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)


class ReplayRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"consumer": "profile.events", "since": "2026-11-20T00:00:00Z", "dry_run": True}]})

    consumer: str | None = Field(default=None, max_length=200)
    since: datetime | None = None
    until: datetime | None = None
    error: str | None = Field(default=None, max_length=200,
                              description="Substring of the error or its type.")
    records: list[RecordRef] | None = Field(default=None, max_length=10_000,
                                            description="Only these DLQ records.")
    limit: int = Field(default=1000, ge=1, le=10_000)
    dry_run: bool = False


class Replayed(BaseModel):
    replayed: int
    items: list[DeadLetterOut]


def document_consumers(spec: dict[str, Any], service: str) -> dict[str, Any]:
    """The OpenAPI `spec` of `service`, saying that `consumer` names one of its own
    (`<service>.`, else 422)."""
    pattern = "^" + re.escape(service) + r"\."
    places = [p.get("schema", {}) for p in spec["paths"].get("/v1/dlq", {}).get(
        "get", {}).get("parameters", ()) if p.get("name") == "consumer"]
    places.append(spec["components"]["schemas"].get("ReplayRequest", {}).get(
        "properties", {}).get("consumer", {}))
    for place in places:
        for option in place.get("anyOf", [place]):
            if option.get("type") == "string":
                option["pattern"] = pattern
    return spec


def _out(d: DeadLetter) -> DeadLetterOut:
    return DeadLetterOut(
        partition=d.partition, offset=d.offset, consumer=d.consumer, topic=d.topic,
        source_partition=d.source_partition, source_offset=d.source_offset, error=d.error,
        error_type=d.error_type, at=d.at,
        key=d.key.decode(errors="replace") if d.key is not None else None,
        value=d.value[:4000].decode(errors="replace") if d.value is not None else None)


def _matcher(request: Request, principal: Principal, consumer: str | None,
             since: datetime | None, until: datetime | None, error: str | None,
             records: list[RecordRef] | None = None) -> Callable[[DeadLetter], bool]:
    runtime = request.app.state.runtime
    prefix = f"{runtime.parts.name}."
    if consumer is not None and not consumer.startswith(prefix):
        raise Problem(422, "Unprocessable Content",
                      f"consumer must be one of this service's ('{prefix}...')",
                      field="consumer")
    default = runtime.settings.default_workspace
    wanted = {(r.partition, r.offset) for r in records} if records is not None else None
    needle = error.lower() if error else None

    def match(d: DeadLetter) -> bool:
        if not d.consumer.startswith(prefix) or (consumer and d.consumer != consumer):
            return False
        if d.workspace_id != principal.workspace_id and not (
                d.workspace_id is None and principal.workspace_id == default):
            return False
        if since and (d.at is None or d.at < since) or until and (d.at is None or d.at >= until):
            return False
        if needle and needle not in d.error.lower() and needle not in d.error_type.lower():
            return False
        return wanted is None or (d.partition, d.offset) in wanted
    return match


def _check_times(since: datetime | None, until: datetime | None) -> None:
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise Problem(422, "Unprocessable Content", f"{name} needs a time zone",
                          field=name)


@router.get("", response_model=DeadLetters, responses=answers(None, 422))
async def list_dead_letters(
        request: Request, principal: AdminDep,
        consumer: Annotated[str | None, Query(max_length=200)] = None,
        since: datetime | None = None, until: datetime | None = None,
        error: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100) -> DeadLetters:
    """This service's dead letters, oldest first, by consumer, time and error."""
    _check_times(since, until)
    match = _matcher(request, principal, consumer, since, until, error)
    letters = await _read(request, match, limit)
    return DeadLetters(items=[_out(d) for d in letters])


@router.post("/replay", response_model=Replayed, responses=answers(None, 422))
async def replay_dead_letters(request: Request, principal: AdminDep,
                              body: ReplayRequest) -> Replayed:
    """Publish matching dead letters again to the topic they came from (every consumer of
    that topic sees them again; handlers are idempotent). `dry_run` only lists them."""
    _check_times(body.since, body.until)
    match = _matcher(request, principal, body.consumer, body.since, body.until, body.error,
                     body.records)
    letters = await _read(request, match, body.limit)
    runtime = request.app.state.runtime
    if body.dry_run:
        return Replayed(replayed=0, items=[_out(d) for d in letters])
    if not runtime.producer_started:
        raise Problem(503, "Service Unavailable", "Kafka is not connected yet",
                      headers={"Retry-After": "2"})
    try:
        count = await replay(runtime.producer, letters)
    except Exception as exc:
        raise Problem(503, "Service Unavailable", f"publishing failed: {type(exc).__name__}",
                      headers={"Retry-After": "2"}) from exc
    return Replayed(replayed=count, items=[_out(d) for d in letters])


async def _read(request: Request, match: Callable[[DeadLetter], bool],
                limit: int) -> list[DeadLetter]:
    try:
        return await read_dead_letters(request.app.state.runtime.settings, match, limit=limit)
    except Exception as exc:
        raise Problem(503, "Service Unavailable", f"cannot read the DLQ: {type(exc).__name__}",
                      headers={"Retry-After": "2"}) from exc
