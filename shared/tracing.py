"""OpenTelemetry traces across the services, on only when the standard `OTEL_*` variables
ask for them (`OTEL_TRACES_EXPORTER` other than `none`, or `OTEL_EXPORTER_OTLP_ENDPOINT` /
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and the `otel` extra is installed.

One event is followed from the HTTP request through the topics to the provider call: the
W3C `traceparent` of the current span goes into the Kafka headers through the shared
header code (`shared.kafka.codec.headers_for`, `trace_headers`, `with_trace`: ingest's
produce, and the outbox rows' stored headers, which the relay publishes as they are), and each
consumer's batch span takes the records' context as its parent (the first record's; the
others are links). Off, nothing here creates a span or adds a header: every entry point
checks one module-level value first, and opentelemetry is not even imported.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

_tracer: Any = None  # an opentelemetry Tracer while tracing is on
_propagator: Any = None
TRACE_HEADER = "traceparent"


def wanted() -> bool:
    """Do the standard variables ask for traces?"""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(exporter or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def enabled() -> bool:
    return _tracer is not None


def setup(service: str) -> None:
    """Turn tracing on for this process if the variables ask (each runtime calls this)."""
    if _tracer is not None or not wanted():
        return
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        log.warning("OTEL_* variables are set but opentelemetry is not installed "
                    "(pip install 'touchpoint[otel]'): no traces")
        return
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # nobody configured one: ours
        name = os.environ.get("OTEL_SERVICE_NAME") or f"touchpoint-{service}"
        provider = TracerProvider(resource=Resource.create({"service.name": name}))
        kinds = [k.strip() for k in (os.environ.get("OTEL_TRACES_EXPORTER") or "otlp")
                 .lower().split(",") if k.strip()]
        for kind in kinds:
            if kind == "console":
                provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
            elif kind == "otlp":
                provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
            else:
                log.warning("OTEL_TRACES_EXPORTER=%s is not supported here (otlp, console)",
                            kind)
        trace.set_tracer_provider(provider)
    use(provider)


def _otlp_exporter() -> Any:
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as grpc
        return grpc.OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http import trace_exporter as http
    return http.OTLPSpanExporter()


def use(provider: Any) -> None:
    """Trace through this TracerProvider (tests: one with an in-memory exporter); None: off."""
    global _tracer, _propagator
    if provider is None:
        _tracer = _propagator = None
        return
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _propagator = TraceContextTextMapPropagator()
    _tracer = provider.get_tracer("touchpoint")


def _context(headers: Sequence[tuple[str, bytes]] | None) -> Any:
    carrier = {k: v.decode("latin-1") for k, v in headers or () if k == TRACE_HEADER}
    return _propagator.extract(carrier) if carrier else None


@contextmanager
def span(name: str, service: str, *, kind: str = "internal",
         parent: Sequence[tuple[str, bytes]] | None = None,
         links: Sequence[Sequence[tuple[str, bytes]] | None] = (),
         attributes: dict[str, Any] | None = None) -> Iterator[None]:
    """A span around the block (current inside it); nothing at all when tracing is off.
    `parent`: headers carrying the caller's `traceparent`; `links`: more such headers."""
    if _tracer is None:
        yield
        return
    from opentelemetry.trace import Link, SpanKind, get_current_span

    found = [get_current_span(c).get_span_context() for c in map(_context, links) if c]
    attrs = {"touchpoint.service": service, **(attributes or {})}
    with _tracer.start_as_current_span(name, context=_context(parent),
                                       kind=getattr(SpanKind, kind.upper()),
                                       links=[Link(c) for c in found if c.is_valid],
                                       attributes=attrs):
        yield


def current_headers() -> list[tuple[str, bytes]]:
    """The current span's `traceparent` as a Kafka header; [] when off or outside a span."""
    if _tracer is None:
        return []
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return [(k, v.encode()) for k, v in carrier.items() if k == TRACE_HEADER]


class TraceRequests:
    """ASGI middleware: a server span per HTTP request (the caller's `traceparent` as its
    parent). `build_app` adds it only when tracing is wanted; it checks again per request."""

    def __init__(self, app: Any, service: str) -> None:
        self.app, self.service = app, service

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if _tracer is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = [(k.decode("latin-1"), v) for k, v in scope.get("headers") or ()]
        with span(f"{self.service} {scope['method']}", self.service, kind="server",
                  parent=headers, attributes={"http.request.method": scope["method"],
                                              "url.path": scope["path"]}):
            await self.app(scope, receive, send)
