"""The Segment HTTP Tracking API: /v1/track, identify, page, screen, group, alias, batch.

`handle_call` and `handle_batch` do the work from headers and raw body. They are served
by `fastpath.TrackingFastPath` (plain ASGI: the hot path skips FastAPI's routing) and are
also registered below as FastAPI routes, which give the OpenAPI document and 405s.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, Security
from fastapi.security import HTTPBasic
from pydantic import ValidationError
from starlette.datastructures import State

from services.ingest import metrics
from services.ingest.acceptance import Acceptor
from services.ingest.api.body import (
    MAX_EVENT_BYTES,
    TooDeep,
    authenticate,
    encoded,
    parse_json,
)
from services.ingest.api.schemas import (
    CALL_MODELS,
    CALL_TYPES,
    Accepted,
    BatchAccepted,
    TrackingBatch,
    TrackingCall,
)
from services.ingest.domain.calls import Call, event_document
from services.ingest.publisher import Outgoing
from shared.contracts.storable import Unstorable, check_storable
from shared.http.contracts import answers
from shared.http.problems import Problem

SUCCESS = {"success": True}  # exactly Segment's answer: SDKs check it
Handler = Callable[[State, Mapping[str, str], bytes], Awaitable[dict[str, Any]]]


class _Rejected(Exception):
    def __init__(self, errors: list[dict[str, str]], status: int = 400) -> None:
        super().__init__(errors)
        self.errors, self.status = errors, status


def _errors(exc: ValidationError) -> list[dict[str, str]]:
    # Messages only, never the input: it may hold personal data.
    return [{"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
            for e in exc.errors()]


def _parse(item: Any, *, workspace_id: str, received_at: datetime,
           batch_sent_at: datetime | None = None) -> Outgoing:
    """One call -> the encoded event, or _Rejected carrying field errors."""
    if not isinstance(item, dict):
        raise _Rejected([{"field": "body", "message": "expected an object"}])
    try:
        as_json = encoded(item)
    except TooDeep as exc:
        raise _Rejected([{"field": "body", "message": "nested more than 250 levels deep"}]) from exc
    if len(as_json) > MAX_EVENT_BYTES:
        raise _Rejected([{"field": "body", "message": f"event exceeds {MAX_EVENT_BYTES} bytes"}],
                        status=413)
    try:  # the rule every reader of the topic applies too: accepted means applicable
        check_storable(item, encoded=as_json)
    except Unstorable as exc:
        raise _Rejected([{"field": exc.field, "message": exc.reason}]) from exc
    try:
        call = Call.model_validate(item)
    except ValidationError as exc:
        raise _Rejected(_errors(exc)) from exc
    if problems := call.problems():
        raise _Rejected(problems)
    return Outgoing.of(event_document(call, workspace_id=workspace_id,
                                      received_at=received_at, batch_sent_at=batch_sent_at))


def call_handler(call_type: str) -> Handler:
    async def handle_call(state: State, headers: Mapping[str, str],
                          raw: bytes) -> dict[str, Any]:
        """One call: 200 once accepted; Problem otherwise."""
        received_at = datetime.now(UTC)
        body = parse_json(raw, headers)
        principal = await authenticate(state.runtime.keyring, headers, body)
        body["type"] = call_type
        try:
            event = _parse(body, workspace_id=principal.workspace_id, received_at=received_at)
        except _Rejected as rej:
            metrics.REJECTED.inc()
            detail = "; ".join(f"{e['field']}: {e['message']}" for e in rej.errors)
            raise Problem(rej.status, "Invalid event", detail, errors=rej.errors) from rej
        acceptor: Acceptor = state.acceptor
        await acceptor.accept(principal.workspace_id, [event])
        return SUCCESS

    return handle_call


async def handle_batch(state: State, headers: Mapping[str, str], raw: bytes) -> dict[str, Any]:
    """A batch: the valid calls are accepted even when others are rejected."""
    received_at = datetime.now(UTC)
    body = parse_json(raw, headers)
    principal = await authenticate(state.runtime.keyring, headers, body)
    items = body.get("batch")
    if not isinstance(items, list) or not items:
        raise Problem(400, "Invalid request", "`batch` must be a non-empty array",
                      errors=[{"field": "batch", "message": "expected a non-empty array"}])
    batch_sent_at = _sent_at(body.get("sentAt"))
    shared = {name: body[name] for name in ("context", "integrations")
              if isinstance(body.get(name), dict) and body[name]}
    events: list[Outgoing] = []
    rejected: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if isinstance(item, dict) and shared:
            item = _with_shared(item, shared)
        try:
            events.append(_parse(item, workspace_id=principal.workspace_id,
                                 received_at=received_at, batch_sent_at=batch_sent_at))
        except _Rejected as rej:
            rejected.append({"index": index, "status": rej.status, "errors": rej.errors})
    metrics.REJECTED.inc(len(rejected))
    if not events:
        raise Problem(400, "Invalid batch", "no call in the batch is valid", rejected=rejected)
    acceptor: Acceptor = state.acceptor
    done = await acceptor.accept(principal.workspace_id, events)
    result: dict[str, Any] = {"success": True, "accepted": len(events),
                              "duplicates": done.duplicates}
    if rejected:
        result["rejected"] = rejected
    return result


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


# Path -> handler: what the fast path serves. analytics.js (analytics-next) posts each
# call to the type's first letter (`/v1/t`, `/v1/i`, ...) and its batches to `/v1/b`.
HANDLERS: dict[str, Handler] = {
    **{f"/v1/{call_type}": call_handler(call_type) for call_type in CALL_TYPES},
    "/v1/batch": handle_batch,
    "/v1/import": handle_batch,
}
SHORT_PATHS = {f"/v1/{call_type[0]}": f"/v1/{call_type}" for call_type in CALL_TYPES}
SHORT_PATHS["/v1/b"] = "/v1/batch"
HANDLERS.update({short: HANDLERS[full] for short, full in SHORT_PATHS.items()})

router = APIRouter(prefix="/v1", tags=["tracking"])
_CALL_DOC = ("Accepts one Segment-spec `{0}` call (JSON, optionally gzip). 200 "
             "`{{\"success\": true}}` once the broker acknowledged it, or once an earlier request "
             "with the same `messageId` was accepted (dedupe window 48 h). 400/413 problem+json "
             "naming the field; 401 for an unknown or revoked write key; 503 + Retry-After when "
             "the broker or the database is unreachable.")
_BATCH_DOC = ("Up to 500 KB of calls (32 KB each). Valid calls are accepted even when others are "
              "rejected: the answer counts them (`accepted`, of which `duplicates` were accepted "
              "before) and lists each rejected call's `index`, `status` and field errors. "
              "Top-level `context`, `integrations` and `sentAt` apply to every call. 400 when no "
              "call is valid.")


# Declared for OpenAPI: the fast path reads the key itself (Basic user name, or `writeKey`
# in the body), as FastAPI's HTTPBasic refuses a header without the `:` some SDKs omit.
write_key = HTTPBasic(auto_error=False, scheme_name="writeKey",
                      description="The write key as user name, empty password; or `writeKey` "
                                  "in the body.")


def _route(path: str, handler: Handler, summary: str, description: str,
           documented: bool = True, model: type[TrackingCall] = TrackingCall) -> None:
    batch = handler is handle_batch

    # Never called for POST (the fast path answers first): they give the OpenAPI document.
    async def call_endpoint(request: Request, _body: Annotated[TrackingCall, Body()]
                            ) -> dict[str, Any]:
        return await handler(request.app.state, request.headers, await request.body())

    call_endpoint.__annotations__["_body"] = Annotated[model, Body()]  # this call type's

    async def batch_endpoint(request: Request, _body: Annotated[TrackingBatch, Body()]
                             ) -> dict[str, Any]:
        return await handler(request.app.state, request.headers, await request.body())

    endpoint = batch_endpoint if batch else call_endpoint
    endpoint.__name__ = path.rsplit("/", 1)[-1]
    router.add_api_route(path.removeprefix("/v1"), endpoint, methods=["POST"], summary=summary,
                         description=description, include_in_schema=documented,
                         dependencies=[Security(write_key)],
                         responses=answers(BatchAccepted if batch else Accepted, 400, 413))


for _type in CALL_TYPES:
    _route(f"/v1/{_type}", HANDLERS[f"/v1/{_type}"], f"Segment `{_type}` call",
           _CALL_DOC.format(_type), model=CALL_MODELS[_type])
_route("/v1/batch", handle_batch, "Segment batch", _BATCH_DOC)
_route("/v1/import", handle_batch, "Alias of /v1/batch", "Same as `/v1/batch`. " + _BATCH_DOC)
for _short, _full in SHORT_PATHS.items():
    _route(_short, HANDLERS[_full], f"analytics.js path of {_full}", f"Same as `{_full}`.",
           documented=False, model=CALL_MODELS.get(_full.removeprefix("/v1/"), TrackingCall))
