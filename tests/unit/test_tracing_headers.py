"""Trace context in the Kafka headers: nothing when tracing is off; the current span's
traceparent, added once, when it is on (ingest's headers and the outbox rows' JSON)."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from shared import tracing
from shared.contracts.events import Event
from shared.kafka.codec import header, headers_for, trace_headers, with_trace

sdk = pytest.importorskip("opentelemetry.sdk.trace")

EVENT = Event.model_validate({"id": "e1", "workspace_id": "w", "type": "track", "event": "X",
                              "user_id": "u", "timestamp": "2026-12-04T10:00:00Z",
                              "received_at": "2026-12-04T10:00:00Z"})
STORED = orjson.dumps([["content-type", "application/json"], ["schema", "events/v1"],
                       ["message-id", "e1"]]).decode()


@pytest.fixture
def on() -> Iterator[None]:
    tracing.use(sdk.TracerProvider())
    try:
        yield
    finally:
        tracing.use(None)


def test_off_nothing_is_added() -> None:
    assert not tracing.enabled()
    assert trace_headers() == []
    assert [k for k, _ in headers_for(EVENT, "events")] == ["content-type", "schema",
                                                             "message-id"]
    stored = [STORED]
    assert with_trace(stored) is stored
    with tracing.span("x", "test"):  # no span is made
        assert trace_headers() == []


def test_on_outside_a_span_nothing_is_added(on: None) -> None:
    assert trace_headers() == [] and with_trace([STORED]) == [STORED]


def test_on_the_current_span_travels_once(on: None) -> None:
    with tracing.span("ingest POST", "ingest", kind="server"):
        parent = header(trace_headers(), "traceparent")
        assert parent and parent.startswith("00-")
        assert header(headers_for(EVENT, "events"), "traceparent") == parent
        traced = with_trace([STORED])
        assert orjson.loads(traced[0])[-1] == ["traceparent", parent]
        assert with_trace(traced) == traced  # added once
        # A consumer's span continues the same trace.
        with tracing.span("profile.events process", "profile", kind="consumer",
                          parent=[("traceparent", parent.encode())]):
            child = header(trace_headers(), "traceparent")
    assert child and child.split("-")[1] == parent.split("-")[1]
    assert child.split("-")[2] != parent.split("-")[2]
