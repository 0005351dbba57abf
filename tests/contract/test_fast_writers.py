"""Every example message of every topic with a fast writer, written by that writer, is the
model's bytes (`shared.kafka.codec.encode`): the writers in shared/contracts/ never drift
from their models. tests/unit/test_profile_encoding.py, test_messaging_events.py and
test_journey_outgoing.py add the edge cases (unicode, control characters, sparse values)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel

from shared.contracts import TOPICS
from shared.contracts.delivery import DeliveryEvent, delivery_event_json
from shared.contracts.envelope import encode_fast, json_time
from shared.contracts.profile import (
    CHANGE_DATA,
    ChangeKind,
    ConsentData,
    MergedData,
    ProfileChange,
    ProfileEvent,
    change_details,
    profile_change_json,
    profile_event_json,
)
from shared.contracts.send import SendCommand, send_command_json
from shared.kafka.codec import encode, header_pairs, headers_for, headers_json

# Fields the send path's delivery events never carry: events with them keep to the model.
MODEL_ONLY_DELIVERY = {"broadcast", "url", "address", "rule", "window", "count", "until"}


def _profile_event(m: ProfileEvent) -> bytes:
    return profile_event_json(m.id, m.workspace_id, json_time(m.produced_at), m.profile_id,
                              m.event, encode(m.profile))


def _profile_change(m: ProfileChange) -> bytes:
    return profile_change_json(m.id, m.workspace_id, json_time(m.produced_at), m.profile_id,
                               m.kind.value, m.data, json_time(m.occurred_at),
                               None if m.profile is None else encode(m.profile))


def _send_command(m: SendCommand) -> bytes:
    return send_command_json(
        id=m.id, workspace_id=m.workspace_id, produced_at=m.produced_at,
        profile_id=m.profile_id, idempotency_key=m.idempotency_key, channel=m.channel.value,
        template=m.template, to=m.to.model_dump(exclude_none=True),
        journey=None if m.journey is None else m.journey.model_dump(exclude_none=True),
        broadcast=m.broadcast, expires_at=m.expires_at, context=m.context,
        requested_at=m.requested_at)


def _delivery_event(m: DeliveryEvent) -> bytes | None:
    if MODEL_ONLY_DELIVERY & m.model_fields_set or m.idempotency_key is None \
            or m.template is None:
        return None
    return delivery_event_json(
        id=m.id, workspace_id=m.workspace_id, produced_at=m.produced_at,
        profile_id=m.profile_id, message_id=m.message_id, idempotency_key=m.idempotency_key,
        status=m.status.value, channel=m.channel.value, template=m.template,
        journey=None if m.journey is None else m.journey.model_dump(exclude_none=True),
        template_version=m.template_version, test=m.test, codes=m.codes, reason=m.reason,
        occurred_at=m.occurred_at)


WRITERS: dict[str, Callable[[Any], bytes | None]] = {
    "profile-events": _profile_event, "profile-changes": _profile_change,
    "send-commands": _send_command, "delivery-events": _delivery_event}
EXAMPLES = [(name, index, example) for name, contract in TOPICS.items()
            if contract.model is not None
            for index, example in enumerate(json.loads(contract.example_path.read_text()))]


@pytest.mark.parametrize(("topic", "index", "example"), EXAMPLES,
                         ids=[f"{n}-{i}" for n, i, _ in EXAMPLES])
def test_example_bytes_from_model_and_fast_writer(topic: str, index: int,
                                                  example: dict[str, Any]) -> None:
    model_class = TOPICS[topic].model
    assert model_class is not None
    model: BaseModel = model_class.model_validate(example)
    assert encode_fast(model) == encode(model)
    assert headers_json(topic, getattr(model, "id", "")) == json.dumps(
        [[k, v.decode()] for k, v in headers_for(model, topic)], separators=(",", ":"))
    assert header_pairs(topic, getattr(model, "id", "")) == headers_for(model, topic)
    writer = WRITERS.get(topic)
    if writer is None:  # `events`: ingest writes them from a call (tests/unit/test_ingest_calls)
        return
    written = writer(model)
    if written is None:
        assert topic == "delivery-events"  # an event only the model writes (see above)
        return
    assert written == encode(model)


def test_every_fast_writer_is_exercised_by_an_example() -> None:
    for topic, writer in WRITERS.items():
        models = [TOPICS[t].model.model_validate(e)  # type: ignore[union-attr]
                  for t, _, e in EXAMPLES if t == topic]
        assert any(writer(m) is not None for m in models), topic


@pytest.mark.parametrize("example", [e for t, _, e in EXAMPLES if t == "profile-changes"])
def test_change_data_is_typed_per_kind(example: dict[str, Any]) -> None:
    change = ProfileChange.model_validate(example)
    details = change.details()
    assert type(details) is CHANGE_DATA[change.kind]
    dumped = details.model_dump(by_alias=True, exclude_unset=True)
    assert dumped == {k: v for k, v in change.data.items() if k in dumped}
    assert set(dumped) == {k for k in change.data
                           if k in {f.alias or n for n, f in type(details).model_fields.items()}}


def test_change_data_keeps_v1_leniency() -> None:
    assert change_details(ChangeKind.merged, {"merged_ids": [7, "a"], "new": 1}) == MergedData(
        merged_ids=["7", "a"])
    odd = change_details(ChangeKind.consent_changed, {"channel": "email", "subscribed": "maybe"})
    assert odd == ConsentData(channel="email")
