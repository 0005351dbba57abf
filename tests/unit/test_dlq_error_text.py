"""`dlq.error` names fields and error types, never a value of the refused record."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from shared.contracts.events import Event
from shared.kafka.error_text import error_text, validation_text
from shared.kafka.errors import InvalidMessage

EMAIL = "ada.lovelace@example.com"


def _refused(document: dict[str, object]) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Event.model_validate_json(orjson.dumps(document))
    return caught.value


def _event(**fields: object) -> dict[str, object]:
    return {"id": "e1", "schema_version": 1, "workspace_id": "ws", "type": "track",
            "event": "Signed Up", "user_id": "u1", "timestamp": "2026-01-01T00:00:00Z",
            "received_at": "2026-01-01T00:00:00Z", "produced_at": "2026-01-01T00:00:00Z",
            **fields}


def test_a_value_that_fails_to_parse_is_named_not_quoted() -> None:
    exc = _refused(_event(timestamp=EMAIL))
    assert EMAIL in str(exc)  # what pydantic's own text would have put in the header
    wrapped = InvalidMessage(validation_text(exc))  # as the consumer loop raises it
    wrapped.__cause__ = exc
    text = error_text(wrapped)
    assert text == validation_text(exc)
    assert text.startswith("timestamp: datetime_") and EMAIL not in text


def test_a_key_that_is_an_address_is_written_as_a_star() -> None:
    exc = _refused(_event(traits={EMAIL: "a\x00b", "plan": {"ok": 1}}))
    text = validation_text(exc)
    assert "traits.*" in text and "contains NUL or a control character" in text, text
    assert EMAIL not in text and "@" not in text


def test_any_other_error_is_its_type_and_frames_without_its_message() -> None:
    def handler() -> None:
        raise ValueError(f"duplicate key: Key (email)=({EMAIL}) already exists")

    try:
        handler()
    except ValueError as exc:
        text = error_text(exc)
    assert text.startswith("ValueError at ") and "in handler" in text, text
    assert EMAIL not in text and "duplicate" not in text
