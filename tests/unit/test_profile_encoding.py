"""Profile calls the event writer with the snapshot the model would hold (pure, no sockets).
The writers' own bytes are pinned for every example in tests/contract/test_fast_writers.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson

from services.profile.domain.conventions import Conventions
from services.profile.domain.snapshot import snapshot, snapshot_fields
from services.profile.domain.state import ProfileState
from shared.contracts.envelope import encode_fast, json_time
from shared.contracts.events import Event
from shared.contracts.profile import (
    ProfileEvent,
    profile_event_json,
)
from shared.kafka.codec import encode

NOW = datetime(2026, 11, 25, 4, 30, tzinfo=UTC)


def _state() -> ProfileState:
    p = ProfileState("p1", "ws", NOW - timedelta(days=40), NOW, user_id="u1",
                     email="zoë@example.com", traits={"name": "Zoë", "age": 41, "vip": None,
                                                      "score": 0.1 + 0.2},
                     order_count=3, gross_revenue=123.456, first_order_at=NOW - timedelta(30),
                     last_order_at=NOW - timedelta(days=2), lifecycle_stage="active",
                     rfm={"r": 5, "f": 4, "m": 3, "segment": "Champions"},
                     consent={"email": {"subscribed": False, "source": "x", "at": "t"}},
                     codes={"thanks-20": "TH-7K2M9QXA", "wïn": "Grüße-1"})
    p.push_tokens["tok-12345678"] = {"deliverable": True, "reason": None, "at": "t"}
    return p


def _bare_state() -> ProfileState:
    """No user id, address, stage or RFM: the snapshot's None fields are left out."""
    return ProfileState("p2", "ws", NOW, NOW)


def test_profile_event_bytes_equal_the_shared_codec() -> None:
    event = Event.model_validate({
        "id": "e1", "workspace_id": "ws", "type": "track", "event": "Order Completed",
        "user_id": "u1", "properties": {"revenue": 19.99, "items": [{"sku": "é", "n": None}]},
        "context": {"timezone": "Europe/Berlin"},
        "timestamp": datetime(2026, 11, 24, 10, 0, tzinfo=timezone(timedelta(hours=2))),
        "received_at": NOW})
    for produced in (NOW, NOW.replace(microsecond=123456)):
        message = ProfileEvent.model_construct(
            id="e1", schema_version=1, workspace_id="ws", produced_at=produced,
            profile_id="p1", event=event, profile=snapshot(_state(), ["vip"], NOW, Conventions()))
        assert encode_fast(message) == encode(message)
        for state, segments in ((_state(), ["vip", "a"]), (_bare_state(), [])):
            fields = snapshot_fields(state, NOW, Conventions())
            fields["segments"] = sorted(segments)
            model = ProfileEvent.model_construct(
                id="e1", schema_version=1, workspace_id="ws", produced_at=produced,
                profile_id=state.id, event=event,
                profile=snapshot(state, segments, NOW, Conventions()))
            assert profile_event_json("e1", "ws", json_time(produced), state.id, event,
                                      orjson.dumps(fields)) == encode(model)


def test_snapshot_fields_are_a_copy() -> None:
    """A later event in the same batch must not change a snapshot already taken."""
    p = _state()
    fields = snapshot_fields(p, NOW, Conventions())
    p.traits["name"] = "Other"
    assert fields["traits"]["name"] == "Zoë"


def test_change_ids_stay_within_the_envelope_limit_and_are_deterministic() -> None:
    from services.profile.domain.change_ids import MAX_ID, change_id
    from shared.contracts import ProfileChange

    assert change_id("evt-1", "merged", "0") == "evt-1:merged:0"  # short ids are readable
    long = change_id("e" * 200, "traits_changed", "1")
    assert len(long) <= MAX_ID and long == change_id("e" * 200, "traits_changed", "1")
    assert long != change_id("e" * 200, "traits_changed", "2")
    ProfileChange.model_validate({"id": long, "workspace_id": "w", "profile_id": "p",
                                  "kind": "merged", "data": {},
                                  "occurred_at": "2026-01-01T00:00:00Z"})


def test_snapshot_carries_the_workspace_currency_and_zone_byte_for_byte() -> None:
    """Messaging's `money` and `date` filters fall back to the workspace's conventions,
    which travel in the snapshot (absent when unset / UTC, so default snapshots are as
    before)."""
    conv = Conventions(currency="EUR", timezone="Europe/Berlin")
    fields = snapshot_fields(_state(), NOW, conv)
    assert (fields["workspace_currency"], fields["workspace_timezone"]) == ("EUR",
                                                                            "Europe/Berlin")
    fields["segments"] = []
    model = snapshot(_state(), [], NOW, conv)
    assert orjson.dumps(fields) == orjson.dumps(model.model_dump(mode="json", exclude_none=True))
    plain = snapshot_fields(_state(), NOW, Conventions())
    assert "workspace_currency" not in plain and "workspace_timezone" not in plain


def test_templates_use_the_customer_then_the_workspace_then_messaging_settings() -> None:
    from services.messaging.prepare import render_options
    from services.messaging.settings import MessagingSettings

    settings = MessagingSettings(env="test", messaging_currency="USD",
                                 messaging_timezone="UTC")
    workspace = {"workspace_currency": "EUR", "workspace_timezone": "Europe/Berlin"}
    own = render_options(settings, {**workspace, "currency": "GBP",
                                    "timezone": "America/New_York"})
    assert (own.currency, own.timezone) == ("GBP", "America/New_York")
    ws = render_options(settings, workspace)
    assert (ws.currency, ws.timezone) == ("EUR", "Europe/Berlin")
    bare = render_options(settings, {})
    assert (bare.currency, bare.timezone) == ("USD", "UTC")
