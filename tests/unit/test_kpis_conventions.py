"""The workspace conventions that the KPIs read: time zone and attribution windows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from services.profile.domain.conventions import Conventions


def test_time_zone_defaults_to_utc_and_must_be_an_iana_name() -> None:
    assert Conventions().timezone == "UTC"
    assert Conventions(timezone="Europe/Berlin").timezone == "Europe/Berlin"
    for bad in ("Mars/Olympus", "../etc/passwd", "UTC+2"):
        with pytest.raises(ValidationError) as err:
            Conventions(timezone=bad)
        assert err.value.errors()[0]["loc"] == ("timezone",)


def test_attribution_windows_are_iso_durations_that_round_trip_as_json() -> None:
    conv = Conventions.model_validate({"attribution_click_window": "P7D"})
    assert conv.attribution_click_window == timedelta(days=7)
    dumped = Conventions().model_dump(mode="json")
    assert (dumped["attribution_click_window"], dumped["attribution_open_window"]) == \
        ("P5D", "P1D")
    assert Conventions.model_validate(dumped) == Conventions()
    with pytest.raises(ValidationError):
        Conventions.model_validate({"attribution_open_window": "P400D"})
