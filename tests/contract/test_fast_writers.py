"""Every example message of every topic, written by its topic's fast writer, is the model's
bytes (`shared.kafka.codec.encode`): the writers in shared/contracts/ never drift from
their models. Each example is also written with awkward values in every top-level text
and time field (unicode, quotes, control characters, microseconds, other zones), so the
services' own tests need not pin bytes again: they check only how they call a writer."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from enum import Enum
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

ODD_TEXT = "wïn-back \"q\" \\ \x00\x1f\x7f\r\n\t Grüße 日本語 📬 \u2028"
ODD_TIMES = [datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
             datetime(2026, 11, 25, 9, 47, 9, 864035, tzinfo=UTC),
             datetime(2026, 11, 24, 10, 0, 0, 5, tzinfo=timezone(timedelta(hours=-3)))]


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


def _delivery_event(m: DeliveryEvent) -> bytes:
    return delivery_event_json(
        id=m.id, workspace_id=m.workspace_id, produced_at=m.produced_at,
        profile_id=m.profile_id, message_id=m.message_id, idempotency_key=m.idempotency_key,
        status=m.status.value, channel=m.channel.value, template=m.template,
        journey=None if m.journey is None else m.journey.model_dump(exclude_none=True),
        broadcast=m.broadcast, template_version=m.template_version, test=m.test,
        codes=m.codes, reason=m.reason, url=m.url, address=m.address, rule=m.rule,
        window=m.window, count=m.count, until=m.until, occurred_at=m.occurred_at)


def _event(m: BaseModel) -> bytes:
    """`events`: ingest writes them from a call (tests/unit/test_ingest_calls.py checks that
    path); its writer is the envelope's `encode_fast`."""
    return encode_fast(m)


WRITERS: dict[str, Callable[[Any], bytes]] = {
    "events": _event,
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
    assert WRITERS[topic](model) == encode(model)
    variants = _odd_variants(model)
    assert variants
    for variant in variants:
        assert WRITERS[topic](variant) == encode(variant), variant


def _odd_variants(model: BaseModel) -> list[BaseModel]:
    """The model with each top-level text field (enums aside) made awkward, then with each
    time field at each of ODD_TIMES. Not validated again: the writer and the model's dump
    must agree on any value, bounded or not."""
    out: list[BaseModel] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, str) and not isinstance(value, Enum):
            out.append(model.model_copy(update={name: value + ODD_TEXT}))
        elif isinstance(value, datetime):
            out += [model.model_copy(update={name: at}) for at in ODD_TIMES]
    return out


def test_every_topic_has_a_fast_writer_and_examples() -> None:
    topics = {name for name, contract in TOPICS.items() if contract.model is not None}
    assert set(WRITERS) == topics
    assert {t for t, _, _ in EXAMPLES} == topics


def test_every_delivery_event_field_is_in_an_example_and_the_writer() -> None:
    """An added contract field needs an example and a place in `delivery_event_json`."""
    import inspect

    seen = {f for t, _, e in EXAMPLES if t == "delivery-events"
            for f in DeliveryEvent.model_validate(e).model_fields_set}
    fields = set(DeliveryEvent.model_fields) - {"schema_version"}
    assert fields <= seen, fields - seen
    assert fields == set(inspect.signature(delivery_event_json).parameters)


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
