"""Newcombe's hybrid score interval against the published values, and Welch's interval."""

from __future__ import annotations

import pytest

from services.journey.domain.uplift import goal_value, newcombe, uplift, welch, wilson

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


def _sample(values: list[float]) -> tuple[float, float, int]:
    n = len(values)
    mean = sum(values) / n
    return mean, sum((v - mean) ** 2 for v in values) / (n - 1), n


def test_welch_matches_rs_published_sleep_example() -> None:
    # R's documentation example `t.test(extra ~ group, data = sleep)` (Welch by default):
    # t = -1.8608, df = 17.776, 95 percent CI -3.3654832 0.2054832, means 0.75 and 2.33.
    group1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
    group2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
    result = welch(_sample(group1), _sample(group2))
    assert result["difference"] == pytest.approx(-1.58, abs=1e-9)
    assert result["df"] == pytest.approx(17.776, abs=1e-3)
    assert result["ci95"] == pytest.approx([-3.3654832, 0.2054832], abs=1e-6)


def test_welch_with_equal_groups_has_the_pooled_degrees_of_freedom() -> None:
    # [1..5] vs [3..7]: means 3 and 5, variances 2.5 each, n 5 each: se = sqrt(0.5 + 0.5) = 1,
    # df = 1 / (0.25 / 4 + 0.25 / 4) = 8, t(0.975, 8) = 2.306004 (tables): -2 ± 2.306004.
    result = welch(_sample([1, 2, 3, 4, 5]), _sample([3, 4, 5, 6, 7]))
    assert result["df"] == 8.0
    assert result["ci95"] == pytest.approx([-4.306004, 0.306004], abs=1e-6)


def test_goal_value_reads_the_first_numeric_revenue_property() -> None:
    names = ("amount", "revenue")
    assert goal_value({"amount": "12.5", "revenue": 99}, names) == 12.5
    assert goal_value({"amount": "n/a", "revenue": 7}, names) == 7.0
    assert goal_value({"amount": True, "revenue": None}, names) == 0.0
    assert goal_value({"total": 30}, names) == 0.0
    assert goal_value({}, ("revenue", "total")) == 0.0
