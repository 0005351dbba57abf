"""The send path's delivery events, built without the model, are the model's bytes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.messaging import delivery_events as prepare_module
from services.messaging.delivery_events import encoded, event, send_event
from shared.contracts.delivery import DeliveryStatus
from shared.contracts.envelope import JourneyRef
from shared.contracts.send import Channel, Recipient, SendCommand

JOURNEYS = [None, JourneyRef(key="cart", version=3),
            JourneyRef(key="wïn-back \"q\"", version=1, stage="s", step="st-1", instance="i-9"),
            JourneyRef(key="k", version=2, instance="only-instance")]
REASONS = [None, "not sent", "template 'x' does not exist",
           "smtp: 550 5.1.1 <a@b.io>\r\n\tuser unknown \"quoted\" \\ back\x00\x1f\x7f",
           "Grüße, 日本語, emoji 📬, \u2028 line sep"]
TIMES = [datetime(2026, 11, 25, 9, 47, 9, 864035, tzinfo=UTC),
         datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC)]


def command(channel: Channel, journey: JourneyRef | None) -> SendCommand:
    return SendCommand(id="c-1", workspace_id="wörk-space", profile_id="prof \"1\" é",
                       idempotency_key="idem:key/ü-12345", channel=channel,
                       template="cart-abandoned", to=Recipient(email="a@b.io"),
                       journey=journey, requested_at=datetime.now(UTC))


@pytest.mark.parametrize("journey", JOURNEYS)
@pytest.mark.parametrize("reason", REASONS)
@pytest.mark.parametrize("at", TIMES)
def test_send_events_are_the_models_bytes(monkeypatch: pytest.MonkeyPatch,
                                          journey: JourneyRef | None, reason: str | None,
                                          at: datetime) -> None:
    produced = TIMES[(TIMES.index(at) + 1) % len(TIMES)]
    monkeypatch.setattr(prepare_module, "utcnow", lambda: produced)
    for channel in Channel:
        cmd = command(channel, journey)
        for status in (DeliveryStatus.queued, DeliveryStatus.sent, DeliveryStatus.failed):
            model = event(cmd, "5d9e2a7c-1b1f-4f37-a3c2-0d9b8f1e6a41", status, at,
                          produced_at=produced, reason=reason)
            direct = send_event(cmd, "5d9e2a7c-1b1f-4f37-a3c2-0d9b8f1e6a41", status, at,
                                reason=reason)
            assert direct == encoded(model)  # key, value and headers, byte for byte


@pytest.mark.parametrize("extra", [
    {"template_version": 1},
    {"template_version": 12, "test": True},
    {"test": False},
    {"codes": {"thanks-20": "TH-7K2M9QXA"}, "template_version": 3},
    {"codes": {"wïn \"back\"": "Grüße-1", "b": "2"}, "test": True, "template_version": 2},
])
@pytest.mark.parametrize("journey", JOURNEYS[:2])
def test_send_events_with_version_test_and_codes_are_the_models_bytes(
        monkeypatch: pytest.MonkeyPatch, extra: dict[str, object],
        journey: JourneyRef | None) -> None:
    produced = TIMES[1]
    monkeypatch.setattr(prepare_module, "utcnow", lambda: produced)
    cmd = command(Channel.email, journey)
    for status, reason in ((DeliveryStatus.queued, None), (DeliveryStatus.sent, None),
                           (DeliveryStatus.failed, "code pool x empty")):
        model = event(cmd, "5d9e2a7c-1b1f-4f37-a3c2-0d9b8f1e6a41", status, TIMES[0],
                      produced_at=produced, reason=reason, **extra)
        direct = send_event(cmd, "5d9e2a7c-1b1f-4f37-a3c2-0d9b8f1e6a41", status, TIMES[0],
                            reason=reason, **extra)  # type: ignore[arg-type]
        assert direct == encoded(model)


def test_events_with_an_address_keep_the_models_bound() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        event(command(Channel.email, None), "m", DeliveryStatus.bounced, TIMES[0],
              address="a" * 5000, reason="bounced")
