"""RFM, lifecycle and BG/NBD + Gamma-Gamma: hand-checked values (pure, no sockets)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from services.profile.domain import clv, rfm
from services.profile.domain.conventions import Conventions
from services.profile.domain.lifecycle import is_reactivation, lifecycle_stage, rhythm_days

NOW = datetime(2026, 11, 25, tzinfo=UTC)
CONV = Conventions()


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def test_rfm_quintiles_and_names_on_a_known_dataset() -> None:
    customers = [rfm.Customer("a", 1, 1, 50), rfm.Customer("b", 5, 5, 500),
                 rfm.Customer("c", 20, 3, 300), rfm.Customer("d", 45, 4, 400),
                 rfm.Customer("e", 200, 2, 200)]
    scores = rfm.score_all(customers)
    assert {k: (s.r, s.f, s.m) for k, s in scores.items()} == {
        "a": (5, 1, 1), "b": (4, 5, 5), "c": (3, 3, 3), "d": (2, 4, 4), "e": (1, 2, 2)}
    assert {k: s.segment for k, s in scores.items()} == {
        "a": "New Customers", "b": "Loyal", "c": "Need Attention", "d": "At Risk",
        "e": "Hibernating"}


def test_rfm_ties_share_a_score() -> None:
    scores = rfm.score_all([rfm.Customer(str(i), 10, 1 if i < 8 else 3, 10) for i in range(10)])
    assert {s.f for k, s in scores.items() if int(k) < 8} == {4}  # 8 of 10 at or below: ceil 4
    assert {s.f for k, s in scores.items() if int(k) >= 8} == {5}


@pytest.mark.parametrize(("r", "f", "name"), [
    (5, 5, "Champions"), (1, 5, "Can't Lose Them"), (4, 1, "Promising"), (3, 1, "About To Sleep"),
    (5, 3, "Potential Loyalists"), (2, 3, "At Risk"), (1, 1, "Hibernating")])
def test_rfm_grid(r: int, f: int, name: str) -> None:
    assert rfm.segment_name(r, f) == name


def _stage(n: int, spacing: float, last: float, reactivated: bool = False) -> str | None:
    last_at = ago(last)
    first_at = last_at - timedelta(days=spacing * (n - 1))
    return lifecycle_stage(order_count=n, first_order_at=first_at if n else None,
                           last_order_at=last_at if n else None,
                           reactivated_at=last_at if reactivated else None, now=NOW, conv=CONV)


def test_lifecycle_against_the_customers_own_rhythm() -> None:
    assert _stage(0, 0, 0) is None
    assert _stage(1, 0, 1) == "new"                 # default rhythm 30 d
    assert _stage(5, 10, 5) == "active"             # rhythm 10 d, 5 d since the last order
    assert _stage(3, 10, 20) == "at_risk"           # > 1.5 x 10
    assert _stage(4, 10, 45) == "lapsed"            # > 3 x 10
    assert _stage(2, 10, 200) == "churned"          # > 6 x 10
    assert _stage(1, 0, 50) == "at_risk"            # > 1.5 x 30 (default rhythm)
    assert _stage(3, 10, 2, reactivated=True) == "reactivated"
    assert rhythm_days(4, ago(30), ago(0), CONV) == pytest.approx(10)


def test_reactivation_is_an_order_after_a_lapse() -> None:
    assert is_reactivation(2, ago(100), ago(90), NOW, CONV)       # gap 90 > 3 x 10
    assert not is_reactivation(2, ago(100), ago(90), ago(85), CONV)
    assert not is_reactivation(0, None, None, NOW, CONV)
    assert not is_reactivation(2, ago(100), ago(90), ago(95), CONV)  # late, older order


def test_bgnbd_matches_the_paper() -> None:
    # Fader, Hardie & Lee (2005), CDNOW fit (weeks): r=.243, alpha=4.414, a=.793, b=2.426;
    # a customer with x=2, t_x=30.43, T=38.86 is expected to buy 1.226 times in 39 weeks.
    m = clv.BgNbd(0.243, 4.414, 0.793, 2.426)
    assert clv.expected_orders(m, 2, 30.43, 38.86, 39) == pytest.approx(1.226, abs=1e-3)
    assert clv.p_alive(m, 0, 0, 38.86) == 1.0
    assert clv.p_alive(m, 2, 30.43, 38.86) > clv.p_alive(m, 2, 5.0, 38.86)  # recent is alive


def _simulate(n: int, r: float, alpha: float, a: float, b: float, T: float,
              seed: int = 7) -> tuple[list[int], list[float], list[float]]:
    rng = random.Random(seed)
    xs, txs, Ts = [], [], []
    for _ in range(n):
        lam, p = rng.gammavariate(r, 1 / alpha), rng.betavariate(a, b)
        t, x, tx = 0.0, 0, 0.0
        while True:
            t += rng.expovariate(lam)
            if t > T:
                break
            x, tx = x + 1, t
            if rng.random() < p:
                break
        xs.append(x)
        txs.append(tx)
        Ts.append(T)
    return xs, txs, Ts


def test_bgnbd_fit_recovers_simulated_parameters() -> None:
    x, tx, T = _simulate(4000, r=0.5, alpha=10.0, a=0.8, b=3.0, T=365)
    fit = clv.fit_bgnbd(x, tx, T)
    assert fit is not None
    assert fit.r / fit.alpha == pytest.approx(0.05, rel=0.25)  # mean purchase rate
    assert fit.a / (fit.a + fit.b) == pytest.approx(0.8 / 3.8, rel=0.35)  # mean dropout


def test_gamma_gamma_shrinks_towards_the_population() -> None:
    rng = random.Random(3)
    orders = [rng.randint(1, 6) for _ in range(500)]
    means = [rng.gammavariate(4, 25) for _ in orders]
    gg = clv.fit_gamma_gamma(orders, means)
    assert gg is not None
    population = gg.p * gg.v / (gg.q - 1)
    one_big = clv.expected_order_value(gg, 1, 1000)
    many_big = clv.expected_order_value(gg, 20, 1000)
    assert population < one_big < many_big < 1000  # more orders: trust the own mean more
    # E[M] = p (v + x m) / (p x + q - 1), by hand:
    assert one_big == pytest.approx(gg.p * (gg.v + 1000) / (gg.p + gg.q - 1))


def test_too_few_customers_fit_nothing() -> None:
    assert clv.fit_bgnbd([1, 0], [3.0, 0.0], [10.0, 10.0]) is None
    assert clv.fit_gamma_gamma([1], [10.0]) is None
