"""A poll's profile events are split into lanes by customer (applied concurrently)."""

from services.journey.handlers import by_customer
from shared.contracts import ProfileEvent

NOW = "2026-11-20T10:00:00+00:00"


def event(n: int, profile_id: str, workspace_id: str = "w") -> ProfileEvent:
    return ProfileEvent.model_validate({
        "id": f"ev-{n}", "workspace_id": workspace_id, "profile_id": profile_id,
        "profile": {"profile_id": profile_id},
        "event": {"id": f"ev-{n}", "workspace_id": workspace_id, "type": "track",
                  "event": "E", "user_id": "u", "timestamp": NOW, "received_at": NOW}})


def test_each_customer_stays_in_one_lane_in_order() -> None:
    events = [event(n, f"p{n % 5}") for n in range(40)] + [event(99, "p0", "other")]
    lanes = by_customer(events, 2)
    assert len(lanes) == 2
    assert sorted(e.id for lane in lanes for e in lane) == sorted(e.id for e in events)
    for lane in lanes:
        others = [e for other in lanes if other is not lane for e in other]
        customers = {(e.workspace_id, e.profile_id) for e in lane}
        assert not customers & {(e.workspace_id, e.profile_id) for e in others}
        for customer in customers:  # the original order, per customer
            assert [e for e in lane if (e.workspace_id, e.profile_id) == customer] == \
                [e for e in events if (e.workspace_id, e.profile_id) == customer]
    assert abs(len(lanes[0]) - len(lanes[1])) <= 8  # about even


def test_one_customer_makes_one_lane() -> None:
    events = [event(n, "p") for n in range(3)]
    assert by_customer(events, 2) == [events]
