"""What the engine publishes matches the topic contracts."""

from dataclasses import replace
from datetime import UTC, datetime

import orjson

from services.journey.domain.document import Send, Webhook
from services.journey.domain.state import Instance, Outgoing
from services.journey.outgoing import send_key, to_message
from shared.contracts.events import Event
from shared.contracts.send import SendCommand
from shared.kafka.codec import encode, headers_for, headers_json

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
INST = Instance(id="i-1", workspace_id="w", journey_key="j", version=3, profile_id="p",
                instance_key="o-1", entry_id="e", stage="s", status="active", holdout=False,
                entered_at=NOW, stage_entered_at=NOW, epoch=2)
PROFILE = {"profile_id": "p", "user_id": "u", "email": "a@example.com", "phone": "+331",
           "push_tokens": ["t"], "traits": {"name": "Ada"}}


def roundtrip(out: Outgoing) -> tuple[str, bytes, dict]:
    made = to_message(out, send_key(out), PROFILE, NOW)
    assert made is not None
    return made.short, made.key, orjson.loads(made.value)


def test_send_commands_are_encoded_as_the_contract_encodes_them() -> None:
    """The engine writes SendCommand JSON directly: byte for byte what the model encodes."""
    ask = Outgoing(INST, "s", "ask", 4, {"event": "Order Completed", "at": NOW, "n": None},
                   send=Send(channel="email", template="review"))
    bare = Outgoing(replace(INST, instance_key=""), "s", "ask", 4, {},
                    send=Send(channel="sms", template="nudge"))
    hook = Outgoing(INST, "s", "hook", 5, {}, webhook=Webhook(url="https://x.example/h"))
    sparse = {"profile_id": "p", "email": None}
    for out, profile in [(ask, PROFILE), (bare, sparse), (hook, PROFILE), (ask, {})]:
        made = to_message(out, send_key(out), profile, NOW)
        assert made is not None
        parsed = SendCommand.model_validate_json(made.value)
        assert made.message_id == parsed.id
        assert made.value == encode(parsed)
        assert orjson.loads(headers_json(made.short, made.message_id)) == [
            [k, v.decode()] for k, v in headers_for(parsed, made.short)]


def test_send_command_matches_the_contract() -> None:
    out = Outgoing(INST, "s", "ask", 4, {"event": "Order Completed"},
                   send=Send(channel="email", template="review"))
    topic, key, body = roundtrip(out)
    parsed = SendCommand.model_validate(body)
    assert (topic, key) == ("send-commands", b"w:p")
    assert parsed.id == parsed.idempotency_key == send_key(out)
    assert parsed.to.email == "a@example.com" and parsed.channel == "email"
    assert parsed.journey and (parsed.journey.version, parsed.journey.instance) == (3, "o-1")
    assert body["context"]["journey"]["instance_id"] == "i-1"
    assert body["context"]["profile"]["traits"] == {"name": "Ada"}


def test_webhook_and_update_profile_messages() -> None:
    hook = Outgoing(INST, "s", "hook", 5, {}, webhook=Webhook(url="https://x.example/h"))
    _, _, body = roundtrip(hook)
    parsed = SendCommand.model_validate(body)
    assert parsed.channel == "webhook" and parsed.to.url == "https://x.example/h"
    assert parsed.to.email is None and body["context"]["webhook"]["timeout_s"] == 5.0
    tag = Outgoing(INST, "s", "tag", 6, {}, traits={"vip": True})
    topic, key, body = roundtrip(tag)
    event = Event.model_validate(body)
    assert (topic, key, event.type, event.user_id) == ("events", b"w:u", "identify", "u")
    assert event.id == f"journey-{send_key(tag)}" and event.traits == {"vip": True}


def test_keys_differ_per_step_visit_and_stage_entry() -> None:
    first = Outgoing(INST, "s", "ask", 4, {}, send=Send(channel="email", template="t"))
    again = Outgoing(INST, "s", "ask", 9, {}, send=Send(channel="email", template="t"))
    assert send_key(first) == send_key(first) != send_key(again)
