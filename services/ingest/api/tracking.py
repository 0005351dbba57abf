"""The Segment HTTP Tracking API: /v1/track, identify, page, screen, group, alias, batch."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError

from services.ingest.api.body import MAX_EVENT_BYTES, authenticate, event_too_large, read_json
from services.ingest.domain.calls import Call, to_event
from shared.contracts.envelope import message_key
from shared.contracts.events import Event
from shared.http.problems import Problem
from shared.kafka.errors import is_transient
from shared.kafka.producer import publish

router = APIRouter(prefix="/v1", tags=["tracking"])
PUBLISH_TIMEOUT_S = 2.0  # answer 503 fast when the broker is away, SDKs retry
CALL_TYPES = ("track", "identify", "page", "screen", "group", "alias")


def _errors(exc: ValidationError) -> list[dict[str, str]]:
    return [{"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
            for e in exc.errors()]


def _parse(item: Any, *, workspace_id: str, received_at: datetime,
           batch_sent_at: datetime | None = None) -> Event:
    """One call -> Event, or _Rejected carrying field errors."""
    if not isinstance(item, dict):
        raise _Rejected([{"field": "body", "message": "expected an object"}])
    if event_too_large(item):
        raise _Rejected([{"field": "body", "message": f"event exceeds {MAX_EVENT_BYTES} bytes"}],
                        status=413)
    try:
        call = Call.model_validate(item)
    except ValidationError as exc:
        raise _Rejected(_errors(exc)) from exc
    if problems := call.problems():
        raise _Rejected(problems)
    return to_event(call, workspace_id=workspace_id, received_at=received_at,
                    batch_sent_at=batch_sent_at)


class _Rejected(Exception):
    def __init__(self, errors: list[dict[str, str]], status: int = 400) -> None:
        super().__init__(errors)
        self.errors, self.status = errors, status


async def _publish(request: Request, events: list[Event]) -> None:
    runtime = request.app.state.runtime
    if not runtime.producer_started:
        raise Problem(503, "Service unavailable", "the event broker is not reachable yet",
                      headers={"Retry-After": "2"})
    settings = runtime.settings
    try:
        await publish(runtime.producer, settings.topic("events"),
                      [(message_key(e.workspace_id, e.customer), e) for e in events],
                      topic_short="events", timeout=PUBLISH_TIMEOUT_S)
    except Exception as exc:
        if is_transient(exc):
            raise Problem(503, "Service unavailable", "the event broker did not acknowledge",
                          headers={"Retry-After": "2"}) from exc
        raise


async def _single(request: Request, call_type: str) -> dict[str, Any]:
    received_at = datetime.now(UTC)
    body = await read_json(request)
    principal = await authenticate(request, body)
    body = {**body, "type": call_type}
    try:
        event = _parse(body, workspace_id=principal.workspace_id, received_at=received_at)
    except _Rejected as rej:
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in rej.errors)
        raise Problem(rej.status, "Invalid event", detail, errors=rej.errors) from rej
    await _publish(request, [event])
    return {"success": True}


def _route(call_type: str) -> None:
    async def endpoint(request: Request) -> dict[str, Any]:
        return await _single(request, call_type)

    endpoint.__name__ = call_type
    router.add_api_route(
        f"/{call_type}", endpoint, methods=["POST"],
        summary=f"Segment `{call_type}` call",
        description=f"Accepts one Segment-spec `{call_type}` call. 200 once the broker acked it.",
    )


for _type in CALL_TYPES:
    _route(_type)


@router.post("/batch", summary="Segment batch")
async def batch(request: Request) -> dict[str, Any]:
    """Up to 500 KB of calls; good ones are accepted even when some are rejected."""
    received_at = datetime.now(UTC)
    body = await read_json(request)
    principal = await authenticate(request, body)
    items = body.get("batch")
    if not isinstance(items, list) or not items:
        raise Problem(400, "Invalid request", "`batch` must be a non-empty array",
                      errors=[{"field": "batch", "message": "expected a non-empty array"}])
    batch_sent_at = _sent_at(body.get("sentAt"))
    shared_context = body.get("context") if isinstance(body.get("context"), dict) else {}
    events: list[Event] = []
    rejected: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if isinstance(item, dict) and shared_context:
            item = {**item, "context": {**shared_context, **(item.get("context") or {})}}
        try:
            events.append(_parse(item, workspace_id=principal.workspace_id,
                                 received_at=received_at, batch_sent_at=batch_sent_at))
        except _Rejected as rej:
            rejected.append({"index": index, "errors": rej.errors})
    if not events:
        raise Problem(400, "Invalid batch", "no call in the batch is valid", rejected=rejected)
    await _publish(request, events)
    result: dict[str, Any] = {"success": True, "accepted": len(events)}
    if rejected:
        result["rejected"] = rejected
    return result


router.add_api_route("/import", batch, methods=["POST"],
                     summary="Alias of /v1/batch")


def _sent_at(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
