"""The send path calls the delivery-event writer with what the model would hold: the
command's fields, the journey's non-None ones, the message's version, test flag and codes.
The writer's own bytes (awkward text, times) are pinned once, for every example of every
topic, in tests/contract/test_fast_writers.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.messaging import delivery_events
from services.messaging.delivery_events import event, send_event
from services.messaging.store.outbox import encoded
from shared.contracts.delivery import DeliveryStatus
from shared.contracts.envelope import JourneyRef
from shared.contracts.send import Channel, Recipient, SendCommand

JOURNEYS = [None, JourneyRef(key="cart", version=3),
            JourneyRef(key="wïn-back \"q\"", version=1, stage="s", step="st-1", instance="i-9"),
            JourneyRef(key="k", version=2, instance="only-instance")]
AT = datetime(2026, 11, 25, 9, 47, 9, 864035, tzinfo=UTC)
PRODUCED = datetime(2026, 1, 1, tzinfo=UTC)
MESSAGE = "5d9e2a7c-1b1f-4f37-a3c2-0d9b8f1e6a41"


def command(channel: Channel, journey: JourneyRef | None) -> SendCommand:
    return SendCommand(id="c-1", workspace_id="wörk-space", profile_id="prof \"1\" é",
                       idempotency_key="idem:key/ü-12345", channel=channel,
                       template="cart-abandoned", to=Recipient(email="a@b.io"),
                       journey=journey, requested_at=datetime.now(UTC))


@pytest.mark.parametrize("extra", [
    {}, {"reason": "not sent"},
    {"template_version": 1},
    {"template_version": 12, "test": True},
    {"test": False},
    {"codes": {"thanks-20": "TH-7K2M9QXA"}, "template_version": 3},
    {"codes": {"a": "1", "b": "2"}, "test": True, "template_version": 2},
])
@pytest.mark.parametrize("journey", JOURNEYS)
def test_send_events_are_the_models_bytes(monkeypatch: pytest.MonkeyPatch,
                                          extra: dict[str, object],
                                          journey: JourneyRef | None) -> None:
    monkeypatch.setattr(delivery_events, "utcnow", lambda: PRODUCED)
    for channel in Channel:
        cmd = command(channel, journey)
        for status in (DeliveryStatus.queued, DeliveryStatus.sent, DeliveryStatus.failed):
            model = event(cmd, MESSAGE, status, AT, produced_at=PRODUCED, **extra)
            direct = send_event(cmd, MESSAGE, status, AT, **extra)  # type: ignore[arg-type]
            assert direct == encoded(model)  # key, value and headers, byte for byte


def test_events_with_an_address_keep_the_models_bound() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        event(command(Channel.email, None), "m", DeliveryStatus.bounced, AT,
              address="a" * 5000, reason="bounced")
