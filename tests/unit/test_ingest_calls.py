from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner
from pydantic import ValidationError

from services.ingest.domain.calls import Call, corrected_timestamp, event_document, to_event
from services.ingest.publisher import Outgoing
from shared.contracts.envelope import message_key
from shared.contracts.events import Event
from shared.kafka.codec import encode, headers_for
from shared.kafka.producer import partition_for

RECEIVED = datetime(2026, 11, 23, 10, 0, 10, tzinfo=UTC)


def test_skew_correction_uses_sent_at_and_receive_time() -> None:
    # Client clock is 1 hour behind: it says sent at 09:00:09, we received at 10:00:10.
    ts = datetime(2026, 11, 23, 9, 0, 0, tzinfo=UTC)
    sent = datetime(2026, 11, 23, 9, 0, 9, tzinfo=UTC)
    assert corrected_timestamp(ts, sent, RECEIVED) == RECEIVED - timedelta(seconds=9)
    assert corrected_timestamp(ts, None, RECEIVED) == ts
    assert corrected_timestamp(None, sent, RECEIVED) == RECEIVED


@pytest.mark.parametrize(("payload", "field"), [
    ({"type": "track", "event": "X"}, "userId"),
    ({"type": "track", "userId": "u"}, "event"),
    ({"type": "alias", "userId": "u"}, "previousId"),
    ({"type": "group", "userId": "u"}, "groupId"),
])
def test_spec_rules(payload: dict, field: str) -> None:
    assert field in [p["field"] for p in Call.model_validate(payload).problems()]


def test_numeric_ids_become_strings_and_event_is_built() -> None:
    call = Call.model_validate({"type": "track", "userId": 42, "event": "Signed Up",
                                "messageId": "m1", "properties": {"plan": "pro"}})
    event = to_event(call, workspace_id="w", received_at=RECEIVED)
    assert (event.user_id, event.id, event.customer) == ("42", "m1", "42")
    assert event.timestamp == RECEIVED and event.received_at == RECEIVED


@pytest.mark.parametrize("payload", [
    {"type": "track", "userId": "u", "event": "Paid", "messageId": "m1",
     "properties": {"total": 9.5, "items": [1, 2]}, "context": {"ip": "203.0.113.1"},
     "timestamp": "2026-11-23T09:00:00+02:00", "sentAt": "2026-11-23T09:00:05+02:00"},
    {"type": "page", "anonymousId": "a", "name": "Home", "category": "Landing",
     "originalTimestamp": "2026-11-23T08:00:00.123456Z"},
    {"type": "alias", "userId": "u", "previousId": "a", "integrations": {"All": False}},
    {"type": "group", "userId": 7, "groupId": 9, "traits": {"plan": "pro"}},
    {"type": "identify", "userId": "u", "traits": None, "timestamp": "2026-11-23T10:00:00"},
])
def test_the_hot_path_encoding_is_the_event_contract(payload: dict) -> None:
    """What ingest publishes (built without the model) is what `encode(Event)` gives."""
    document = event_document(Call.model_validate(payload), workspace_id="w",
                              received_at=RECEIVED)
    outgoing = Outgoing.of(document)
    event = Event.model_validate(document)
    assert orjson.loads(outgoing.value) == orjson.loads(encode(event))
    assert Event.model_validate_json(outgoing.value) == event
    assert outgoing.key == message_key("w", event.customer)
    assert outgoing.headers == headers_for(event, "events")
    assert outgoing.id == event.id == payload.get("messageId", event.id)


def test_cached_partitioning_is_kafkas_default_partitioner() -> None:
    partitioner = DefaultPartitioner()
    for count in (1, 3, 6, 7, 64):
        partitions = list(range(count))
        for i in range(300):
            key = f"workspace-{i % 5}:customer-{i}".encode()
            assert partition_for(key, partitions) == partitioner(key, partitions, partitions)


@pytest.mark.parametrize("field", ["timestamp", "originalTimestamp", "sentAt"])
@pytest.mark.parametrize("value", [1700000000, -2.5e-30, True, {"t": 1}])
def test_times_are_iso_strings_never_numbers(field: str, value: object) -> None:
    # pydantic alone would read a number as Unix seconds or milliseconds by its size; the
    # OpenAPI says a date-time string, and the fuzzer holds the server to it.
    with pytest.raises(ValidationError):
        Call.model_validate({"type": "track", "userId": "u", "event": "e", field: value})
    ok = Call.model_validate({"type": "track", "userId": "u", "event": "e",
                              field: "2026-01-15T10:30:00Z"})
    assert getattr(ok, field) == datetime(2026, 1, 15, 10, 30, tzinfo=UTC)
