"""The shared rules of issue 13 (pure): storable text and nesting, plausible event times,
bounded rule durations and dates, control characters in HTTP input, value-free logs."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from services.ingest.api.tracking import _parse, _Rejected
from services.ingest.domain.calls import Call, event_document
from shared.conditions import bounded_duration, check_comparison, compare
from shared.contracts.events import Event
from shared.contracts.storable import JSON_CONTROL as _JSON_CONTROL
from shared.contracts.storable import (
    MAX_DEPTH,
    Unstorable,
    check_storable,
    finite_time,
    plausible_event_time,
)
from shared.logging import JsonFormatter

RECEIVED = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize("document", [
    {"event": "a\x00b"}, {"properties": {"k": ["ok", "\x1f"]}}, {"traits": {"k\x00": 1}},
    {"context": {"a": {"b": "\x0b"}}}, {"traits": nested(MAX_DEPTH + 1)}, {"p": [[[nested(31)]]]},
])
def test_unstorable_documents_are_refused(document: dict[str, Any]) -> None:
    with pytest.raises(Unstorable):
        check_storable(document)
    with pytest.raises(Unstorable):  # ingest's fast path, from the JSON it has anyway
        check_storable(document, encoded=orjson.dumps(document))


@pytest.mark.parametrize("document", [
    {"event": "tab\there", "properties": {"text": "line\nbreak\r\n", "n": 1, "x": None}},
    {"traits": nested(MAX_DEPTH)}, {"name": "\u00e9\u4e2d\U0001f600"},
])
def test_storable_documents_pass(document: dict[str, Any]) -> None:
    check_storable(document)
    check_storable(document, encoded=orjson.dumps(document))


@pytest.mark.parametrize("fields", [
    {"event": "X\x00"}, {"properties": {"a": "\x00"}}, {"traits": nested(40)},
    {"context": {"ip": "\x07"}}, {"userId": "u\x00"},
])
def test_ingest_and_the_event_model_agree(fields: dict[str, Any]) -> None:
    """What ingest would accept is exactly what the consumers' model accepts."""
    item = {"type": "track", "userId": "u", "event": "X", **fields}
    with pytest.raises(_Rejected):
        _parse(item, workspace_id="ws", received_at=RECEIVED)
    # The same content, as ingest would have published it without the check:
    call = Call.model_validate({"type": "track", "userId": "u", "event": "X"})
    document = event_document(call, workspace_id="ws", received_at=RECEIVED)
    document.update({"user_id" if k == "userId" else k: v for k, v in fields.items()})
    with pytest.raises(ValidationError):
        Event.model_validate(document)


@pytest.mark.parametrize(("stamp", "expected"), [
    (datetime(1, 1, 1, tzinfo=UTC), RECEIVED),
    (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), RECEIVED),
    (datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), RECEIVED),
    (RECEIVED + timedelta(hours=24, seconds=1), RECEIVED),
    (RECEIVED + timedelta(hours=23), RECEIVED + timedelta(hours=23)),
    (datetime(1970, 1, 1, tzinfo=UTC), datetime(1970, 1, 1, tzinfo=UTC)),
    (datetime(2020, 1, 1), datetime(2020, 1, 1, tzinfo=UTC)),  # naive reads as UTC
])
def test_plausible_event_time(stamp: datetime, expected: datetime) -> None:
    assert plausible_event_time(stamp, RECEIVED) == expected


def test_ingest_dates_absurd_timestamps_at_receipt_and_keeps_the_original() -> None:
    for raw in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"):
        call = Call.model_validate({"type": "track", "userId": "u", "event": "X",
                                    "timestamp": raw})
        doc = event_document(call, workspace_id="ws", received_at=RECEIVED)
        assert doc["timestamp"] == RECEIVED
        assert doc["original_timestamp"] == call.timestamp
    # A skew correction that leaves the representable range is a broken clock too.
    call = Call.model_validate({"type": "track", "userId": "u", "event": "X",
                                "timestamp": "9999-12-31T23:00:00Z",
                                "sentAt": "0001-01-02T00:00:00Z"})
    assert event_document(call, workspace_id="ws", received_at=RECEIVED)["timestamp"] == RECEIVED


def test_finite_time_reads_postgres_infinity() -> None:
    assert finite_time(datetime.min, RECEIVED) == datetime(1970, 1, 1, tzinfo=UTC)
    assert finite_time(datetime.max, RECEIVED) == RECEIVED
    assert finite_time(None, RECEIVED) is None
    assert finite_time(RECEIVED, datetime.now(UTC)) == RECEIVED


@pytest.mark.parametrize(("op", "value"), [
    ("within_last", "P99999Y"), ("within_last", "P101Y"), ("within_last", "-P1D"),
    ("within_last", "soon"), ("eq", "0001-01-01"), ("gte", "2201-01-01T00:00:00Z"),
    ("in", ["2020-01-01", "1969-07-20"]),
])
def test_comparisons_no_evaluation_could_do_are_refused(op: str, value: Any) -> None:
    with pytest.raises(ValueError):
        check_comparison(op, value)


def test_sane_comparisons_and_durations_pass() -> None:
    check_comparison("within_last", "P100Y")
    check_comparison("eq", "2024-02-29")
    check_comparison("eq", "not a date 0001-01-01")
    check_comparison("eq", "0044-20-7946")  # digits and dashes, not a date
    check_comparison("eq", "0001-01-01-sku")
    check_comparison("gt", 5)
    assert bounded_duration(timedelta(days=36525)) == timedelta(days=36525)
    with pytest.raises(ValueError):
        bounded_duration(timedelta(days=36526))


def test_a_stored_absurd_duration_never_raises_at_evaluation() -> None:
    assert compare("within_last", RECEIVED, "P2000000D", RECEIVED) is False


@pytest.mark.parametrize(("body", "refused"), [
    (rb'{"a": "\u0000"}', True), (rb'{"a": "x\u001F"}', True), (rb'{"a": "\b"}', True),
    (rb'{"a": "\f"}', True), (rb'{"a": "\\\u0001"}', True),
    (rb'{"a": "\\u0000"}', False),  # an escaped backslash, then the letters u0000
    (rb'{"a": "\t\n\r\u0009\u000A\u000d"}', False), (rb'{"a": "\\b\\f"}', False),
    (rb'{"a": "\u00e9\u2028"}', False),
])
def test_json_control_escapes(body: bytes, refused: bool) -> None:
    assert (_JSON_CONTROL.search(body) is not None) is refused


def test_logged_exceptions_carry_type_and_frames_never_the_message() -> None:
    secret = "victim@example.com"
    try:
        try:
            raise KeyError(secret)
        except KeyError as inner:
            raise RuntimeError(f"insert failed for {secret}") from inner
    except RuntimeError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", None,
                                   sys.exc_info())
    line = JsonFormatter("test").format(record)
    assert secret not in line
    assert "RuntimeError" in line and "KeyError" in line and "test_storable.py" in line


def test_documents_saved_before_the_bounds_are_re_read_as_they_were() -> None:
    """Refused at save; yet a journey or segment stored earlier keeps loading (a parse
    failure there would stop a running journey or every segment of a workspace)."""
    from services.journey.domain.document import JourneyDocument
    from services.profile.domain.segments import rule_adapter
    from shared.conditions import STORED

    rule = {"all": [{"field": "profile.last_seen_at", "op": "within_last", "value": "P99999Y"},
                    {"performed": {"event": "Viewed", "within": "P99999Y"}}]}
    doc = {"key": "k", "name": "n", "stages": [{"key": "s", "enter": {"event": "Viewed"}, "steps": [
        {"id": "w", "wait": "P99999Y", "next": "u"},
        {"id": "u", "update_profile": {"deep": nested(40)}}]}]}
    for validate in (lambda: rule_adapter.validate_python(rule),
                     lambda: JourneyDocument.model_validate(doc)):
        with pytest.raises(ValidationError):
            validate()
    rule_adapter.validate_python(rule, context=STORED)
    JourneyDocument.model_validate(doc, context=STORED)


def test_the_event_model_refuses_what_orjson_cannot_encode_either() -> None:
    """Past orjson's 255 levels the model falls back to the walk, which still refuses."""
    call = Call.model_validate({"type": "identify", "userId": "u"})
    document = event_document(call, workspace_id="ws", received_at=RECEIVED)
    Event.model_validate({**document, "traits": {"big": 2**70}})  # a walk, and it passes
    with pytest.raises(ValidationError):
        Event.model_validate({**document, "traits": nested(300)})
