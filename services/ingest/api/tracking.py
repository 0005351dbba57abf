"""The Segment HTTP Tracking API: /v1/track, identify, page, screen, group, alias, batch."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError

from services.ingest.acceptance import Accepted, Acceptor
from services.ingest.api.body import (
    MAX_EVENT_BYTES,
    TooDeep,
    authenticate,
    encoded_size,
    read_json,
)
from services.ingest.domain.calls import Call, to_event
from shared.contracts.events import Event
from shared.http.problems import Problem

router = APIRouter(prefix="/v1", tags=["tracking"])
CALL_TYPES = ("track", "identify", "page", "screen", "group", "alias")


class _Rejected(Exception):
    def __init__(self, errors: list[dict[str, str]], status: int = 400) -> None:
        super().__init__(errors)
        self.errors, self.status = errors, status


def _errors(exc: ValidationError) -> list[dict[str, str]]:
    # Messages only, never the input: it may hold personal data.
    return [{"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
            for e in exc.errors()]


def _parse(item: Any, *, workspace_id: str, received_at: datetime,
           batch_sent_at: datetime | None = None) -> Event:
    """One call -> Event, or _Rejected carrying field errors."""
    if not isinstance(item, dict):
        raise _Rejected([{"field": "body", "message": "expected an object"}])
    try:
        size = encoded_size(item)
    except TooDeep as exc:
        raise _Rejected([{"field": "body", "message": "nested more than 250 levels deep"}]) from exc
    if size > MAX_EVENT_BYTES:
        raise _Rejected([{"field": "body", "message": f"event exceeds {MAX_EVENT_BYTES} bytes"}],
                        status=413)
    try:
        call = Call.model_validate(item)
    except ValidationError as exc:
        raise _Rejected(_errors(exc)) from exc
    if problems := call.problems():
        raise _Rejected(problems)
    try:
        return to_event(call, workspace_id=workspace_id, received_at=received_at,
                        batch_sent_at=batch_sent_at)
    except OverflowError as exc:
        raise _Rejected([{"field": "timestamp",
                          "message": "out of range once corrected by sentAt"}]) from exc


async def _accept(request: Request, workspace_id: str, events: list[Event]) -> Accepted:
    acceptor: Acceptor = request.app.state.acceptor
    return await acceptor.accept(workspace_id, events)


async def _single(request: Request, call_type: str) -> dict[str, Any]:
    received_at = datetime.now(UTC)
    body = await read_json(request)
    principal = await authenticate(request, body)
    body["type"] = call_type
    try:
        event = _parse(body, workspace_id=principal.workspace_id, received_at=received_at)
    except _Rejected as rej:
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in rej.errors)
        raise Problem(rej.status, "Invalid event", detail, errors=rej.errors) from rej
    await _accept(request, principal.workspace_id, [event])
    return {"success": True}  # exactly Segment's answer: SDKs check it


def _route(call_type: str) -> None:
    async def endpoint(request: Request) -> dict[str, Any]:
        return await _single(request, call_type)

    endpoint.__name__ = call_type
    router.add_api_route(
        f"/{call_type}", endpoint, methods=["POST"],
        summary=f"Segment `{call_type}` call",
        description=f"Accepts one Segment-spec `{call_type}` call (JSON, optionally gzip). "
                    "200 `{\"success\": true}` once the broker acknowledged it, or once an "
                    "earlier request with the same `messageId` was accepted (dedupe window "
                    "48 h). 400/413 problem+json naming the field; 401 for an unknown or "
                    "revoked write key; 503 + Retry-After when the broker or the database "
                    "is unreachable.",
    )


for _type in CALL_TYPES:
    _route(_type)


@router.post("/batch", summary="Segment batch")
async def batch(request: Request) -> dict[str, Any]:
    """Up to 500 KB of calls (32 KB each). Valid calls are accepted even when others are
    rejected: the answer counts them (`accepted`, `duplicates`) and lists each rejected
    call's `index` and field errors. Top-level `context`, `integrations` and `sentAt`
    apply to every call. 400 when no call is valid."""
    received_at = datetime.now(UTC)
    body = await read_json(request)
    principal = await authenticate(request, body)
    items = body.get("batch")
    if not isinstance(items, list) or not items:
        raise Problem(400, "Invalid request", "`batch` must be a non-empty array",
                      errors=[{"field": "batch", "message": "expected a non-empty array"}])
    batch_sent_at = _sent_at(body.get("sentAt"))
    shared = {name: body[name] for name in ("context", "integrations")
              if isinstance(body.get(name), dict) and body[name]}
    events: list[Event] = []
    rejected: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if isinstance(item, dict) and shared:
            item = _with_shared(item, shared)
        try:
            events.append(_parse(item, workspace_id=principal.workspace_id,
                                 received_at=received_at, batch_sent_at=batch_sent_at))
        except _Rejected as rej:
            rejected.append({"index": index, "status": rej.status, "errors": rej.errors})
    if not events:
        raise Problem(400, "Invalid batch", "no call in the batch is valid", rejected=rejected)
    done = await _accept(request, principal.workspace_id, events)
    result: dict[str, Any] = {"success": True, "accepted": len(events),
                              "duplicates": done.duplicates}
    if rejected:
        result["rejected"] = rejected
    return result


router.add_api_route("/import", batch, methods=["POST"], summary="Alias of /v1/batch",
                     description="Same as `/v1/batch` (Segment's import endpoint).")


def _with_shared(item: dict[str, Any], shared: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The call's own context/integrations keys win over the batch-level ones."""
    merged = dict(item)
    for name, common in shared.items():
        own = item.get(name)
        merged[name] = {**common, **own} if isinstance(own, dict) else own or common
    return merged


def _sent_at(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(
            value, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise Problem(400, "Invalid request", "sentAt: expected an ISO-8601 date-time",
                      errors=[{"field": "sentAt", "message": "expected an ISO-8601 date-time"}])
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
