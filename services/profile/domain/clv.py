"""Churn risk and predicted LTV: BG/NBD + Gamma-Gamma, fitted per workspace (pure).

Follows Fader, Hardie & Lee (2005), "Counting Your Customers the Easy Way: An Alternative to
the Pareto/NBD Model", Marketing Science 24(2) (BG/NBD: likelihood eq. 6, P(alive) eq. 11,
conditional expectation eq. 10), and Fader, Hardie & Lee (2005), "RFM and CLV: Using Iso-Value
Curves for Customer Base Analysis", JMR 42(4) (Gamma-Gamma spend model), the same models the
`lifetimes`/`btyd` libraries implement. Time unit: days.

Per customer: x = repeat orders (orders - 1), t_x = days from first to last order,
T = days from first order to now, m = mean order value over all orders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1

MIN_CUSTOMERS = 20  # below this a fit says nothing; predictions stay absent


@dataclass(frozen=True)
class BgNbd:
    r: float
    alpha: float
    a: float
    b: float


@dataclass(frozen=True)
class GammaGamma:
    p: float
    q: float
    v: float


def _bgnbd_nll(log_params: np.ndarray, x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> float:
    r, alpha, a, b = np.exp(log_params)
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = betaln(a, b + x) - betaln(a, b) - (r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        a3 = np.where(x > 0, betaln(a + 1, b + x - 1) - betaln(a, b)
                      - (r + x) * np.log(alpha + tx), -np.inf)
    ll = a1 + np.logaddexp(a2, a3)
    # A weak prior-like penalty keeps a, b, r from running off to infinity on small data.
    return float(-ll.sum() + 1e-3 * float(np.sum(log_params ** 2)))


def fit_bgnbd(x: list[int], tx: list[float], T: list[float]) -> BgNbd | None:
    if len(x) < MIN_CUSTOMERS or sum(1 for v in x if v > 0) < 2:
        return None
    xs, txs, Ts = (np.asarray(v, dtype=float) for v in (x, tx, T))
    result = minimize(_bgnbd_nll, np.zeros(4), args=(xs, txs, Ts), method="Nelder-Mead",
                      options={"maxiter": 4000, "xatol": 1e-6, "fatol": 1e-8})
    r, alpha, a, b = (float(v) for v in np.exp(result.x))
    if not all(math.isfinite(v) and v > 0 for v in (r, alpha, a, b)):
        return None
    return BgNbd(r, alpha, a, b)


def p_alive(m: BgNbd, x: int, tx: float, T: float) -> float:
    """Probability the customer is still active (eq. 11)."""
    if x == 0:
        return 1.0
    log_ratio = (m.r + x) * (math.log(m.alpha + T) - math.log(m.alpha + tx))
    term = m.a / (m.b + x - 1) * math.exp(min(log_ratio, 700.0))
    return 1.0 / (1.0 + term)


def expected_orders(m: BgNbd, x: int, tx: float, T: float, horizon: float) -> float:
    """Expected orders in the next `horizon` days (eq. 10); undefined only at a == 1."""
    if abs(m.a - 1) < 1e-9:
        return 0.0
    z = horizon / (m.alpha + T + horizon)
    hyp = float(hyp2f1(m.r + x, m.b + x, m.a + m.b + x - 1, z))
    ratio = ((m.alpha + T) / (m.alpha + T + horizon)) ** (m.r + x)
    first = (m.a + m.b + x - 1) / (m.a - 1) * (1 - ratio * hyp)
    if x > 0:
        odds = m.a / (m.b + x - 1) * ((m.alpha + T) / (m.alpha + tx)) ** (m.r + x)
        first /= 1 + odds
    return max(first, 0.0) if math.isfinite(first) else 0.0


def _gg_nll(log_params: np.ndarray, n: np.ndarray, mean: np.ndarray) -> float:
    p, q, v = np.exp(log_params)
    ll = (gammaln(p * n + q) - gammaln(p * n) - gammaln(q) + q * np.log(v)
          + (p * n - 1) * np.log(mean) + p * n * np.log(n) - (p * n + q) * np.log(n * mean + v))
    return float(-ll.sum() + 1e-3 * float(np.sum(log_params ** 2)))


def fit_gamma_gamma(orders: list[int], mean_value: list[float]) -> GammaGamma | None:
    """Fit on customers with a positive mean order value."""
    pairs = [(n, m) for n, m in zip(orders, mean_value, strict=True) if n >= 1 and m > 0]
    if len(pairs) < MIN_CUSTOMERS:
        return None
    n = np.asarray([p[0] for p in pairs], dtype=float)
    mean = np.asarray([p[1] for p in pairs], dtype=float)
    start = np.log(np.asarray([1.0, 2.0, float(np.mean(mean))]))
    result = minimize(_gg_nll, start, args=(n, mean), method="Nelder-Mead",
                      options={"maxiter": 4000})
    p, q, v = (float(x) for x in np.exp(result.x))
    if not all(math.isfinite(x) and x > 0 for x in (p, q, v)) or q <= 1:
        return None
    return GammaGamma(p, q, v)


def expected_order_value(m: GammaGamma, orders: int, mean_value: float) -> float:
    """E[M | n, mean]: the customer's mean shrunk towards the population's."""
    if orders < 1:
        return m.p * m.v / (m.q - 1)
    return (m.p * (m.v + orders * mean_value)) / (m.p * orders + m.q - 1)
