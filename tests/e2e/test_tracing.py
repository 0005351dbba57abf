"""OpenTelemetry: one trace follows an event from ingest's HTTP request through profile,
journey and messaging to the provider call (W3C traceparent in the Kafka headers and in
the outbox rows' stored headers). Spans go to an in-memory exporter; tracing is switched
off again afterwards, and off it adds no header (checked on the records themselves)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AsyncExitStack

import httpx
import pytest

from services.ingest.app import create_app as ingest_app
from shared import tracing
from shared.kafka.codec import header
from shared.settings import Settings
from tests.support.ready import wait_ready
from tests.support.servers import serve_all, serve_app
from tests.support.smtp import Inbox
from tests.support.topics import read_until

pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)


def journey(key: str, event: str, template: str) -> dict:
    return {"key": key, "name": "Traced welcome", "holdout_percent": 0,
            "stages": [{"key": "welcomed", "enter": {"event": event},
                        "steps": [{"id": "hi", "send": {"channel": "email",
                                                        "template": template}}]}]}


async def test_one_trace_from_ingest_to_the_provider_call(
    settings: Settings, topics: list[str], smtp: tuple[str, Inbox], unique: str,
    admin_headers: dict[str, str], write_auth: tuple[str, str],
    spans: InMemorySpanExporter,
) -> None:
    _, inbox = smtp
    user, event = f"traced-{unique}", f"Signed Up {unique}"
    address = f"{user}@example.com"
    async with AsyncExitStack() as stack, httpx.AsyncClient(timeout=10) as http:
        urls = await serve_all(stack, http, settings)
        r = await http.put(f"{urls['messaging']}/v1/templates/hi-{unique}", headers=admin_headers,
                           json={"channel": "email", "subject": f"Hello {unique}",
                                 "text": "Welcome."})
        assert r.status_code == 200, r.text
        key = f"traced-{unique}"
        r = await http.post(f"{urls['journey']}/v1/journeys", headers=admin_headers,
                            json=journey(key, event, f"hi-{unique}"))
        assert r.status_code == 201, r.text
        r = await http.post(f"{urls['journey']}/v1/journeys/{key}/publish",
                            headers=admin_headers)
        assert r.status_code == 200, r.text

        for kind, body in (("identify", {"traits": {"email": address}}),
                           ("track", {"event": event})):
            r = await http.post(f"{urls['ingest']}/v1/{kind}", auth=write_auth,
                                json={"userId": user, **body})
            assert r.status_code == 200, r.text
        await inbox.wait_for_mail(address, f"Hello {unique}")
        await asyncio.sleep(0.5)  # the last spans end after the mail is accepted

    finished: list[ReadableSpan] = list(spans.get_finished_spans())
    sends = [s for s in finished if s.name == "provider send"]
    assert sends, [s.name for s in finished]
    trace_id = sends[-1].context.trace_id
    in_trace = [s for s in finished if s.context.trace_id == trace_id]
    names = {s.name for s in in_trace}
    assert {"ingest POST", "profile.events process", "journey.profile-events process",
            "messaging.send-commands process", "provider send"} <= names, names
    services = {s.attributes["touchpoint.service"] for s in in_trace}
    assert services >= {"ingest", "profile", "journey", "messaging"}
    root = [s for s in in_trace if s.parent is None]
    assert [s.name for s in root] == ["ingest POST"]  # one trace, rooted at the request


async def test_off_no_span_and_no_header(settings: Settings, topics: list[str],
                                         unique: str, write_auth: tuple[str, str]) -> None:
    assert not tracing.enabled()
    async with AsyncExitStack() as stack, httpx.AsyncClient(timeout=10) as http:
        url = await stack.enter_async_context(serve_app(ingest_app(settings)))
        await wait_ready(http, url, timeout=30)
        r = await http.post(f"{url}/v1/track", auth=write_auth,
                            json={"userId": f"plain-{unique}", "event": "Untraced"})
        assert r.status_code == 200, r.text
    records = await read_until(settings.kafka_bootstrap, settings.topic("events"), lambda rs: any(
        f"plain-{unique}".encode() in (r.value or b"") for r in rs))
    mine = [r for r in records if f"plain-{unique}".encode() in (r.value or b"")]
    assert mine and all(header(r.headers, "traceparent") is None for r in mine)
