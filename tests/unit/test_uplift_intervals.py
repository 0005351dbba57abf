"""Newcombe's hybrid score interval against the published values, and Welch's interval."""

from __future__ import annotations

import pytest

from services.journey.domain.uplift import newcombe, uplift, welch, wilson

# Newcombe RG (1998), "Interval estimation for the difference between independent
# proportions: comparison of eleven methods", Stat Med 17:873-890, Table II, method 10.
PUBLISHED = [
    ((56, 70), (48, 80), (0.0524, 0.3339)),
    ((9, 10), (3, 10), (0.1705, 0.8090)),
    ((5, 56), (0, 29), (-0.0381, 0.1926)),
    ((0, 10), (0, 20), (-0.1611, 0.2775)),
    ((0, 10), (0, 10), (-0.2775, 0.2775)),
    ((10, 10), (0, 20), (0.6791, 1.0000)),
    ((10, 10), (0, 10), (0.6075, 1.0000)),
]


@pytest.mark.parametrize(("treated", "holdout", "expected"), PUBLISHED)
def test_newcombe_matches_the_published_intervals(treated: tuple[int, int],
                                                   holdout: tuple[int, int],
                                                   expected: tuple[float, float]) -> None:
    got = newcombe(treated, holdout)
    assert got is not None
    assert got == pytest.approx(expected, abs=1e-4)


def test_wilson_interval_of_one_proportion() -> None:
    # Newcombe (1998, companion paper on single proportions): 81/263 -> 0.2553 .. 0.3662.
    assert wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)


def test_small_holdouts_get_a_real_interval_not_zero_width() -> None:
    result = uplift((0, 5), (0, 4))
    assert result["uplift"] == 0.0 and result["holdout_size"] == 4
    low, high = result["ci95"]
    assert low < -0.3 and high > 0.3
    assert uplift((3, 10), (0, 0))["ci95"] is None


def test_welch_interval_for_a_difference_of_means() -> None:
    # Two groups: means 20 and 22, variances 4 and 9, n 10 and 12.
    # se = sqrt(0.4 + 0.75) = 1.072381; df = 1.3225 / (0.16 / 9 + 0.5625 / 11) = 19.191;
    # t(0.975, 19.19) = 2.0917 (between 2.093 at 19 and 2.086 at 20 in the tables).
    result = welch((20.0, 4.0, 10), (22.0, 9.0, 12))
    assert result["difference"] == -2.0
    assert result["df"] == pytest.approx(19.191, abs=1e-3)
    low, high = result["ci95"]
    assert (high - low) / 2 == pytest.approx(2.0917 * 1.072381, abs=2e-3)
    assert welch((1.0, 1.0, 1), (1.0, 1.0, 5))["ci95"] is None
