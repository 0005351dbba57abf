from datetime import UTC, datetime, timedelta

import pytest

from services.ingest.domain.calls import Call, corrected_timestamp, to_event

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
