"""KPI figures from summed rollups (pure): rates, revenue net of refunds, NPS score.

Input shapes: `m` maps metric -> currency -> summed value over the interval or window.
Formulas are documented one by one in docs/metrics.md.
"""

from __future__ import annotations

from typing import Any

Sums = dict[str, dict[str, float]]  # metric -> currency -> value


def ratio(num: float | None, den: float | None) -> float | None:
    if num is None or not den:
        return None
    return round(num / den, 6)


def total(m: Sums, metric: str) -> float:
    return sum(m.get(metric, {}).values())


def main_currency(m: Sums, configured: str | None) -> str:
    """The workspace currency: the configured one, else the one with the most orders."""
    if configured:
        return configured
    orders = {c: v for c, v in m.get("orders", {}).items() if c}
    return max(sorted(orders), key=lambda c: orders[c]) if orders else ""


def in_currency(m: Sums, metric: str, main: str) -> float:
    """The metric in the workspace currency (orders that name none count in it)."""
    values = m.get(metric, {})
    return values.get(main, 0.0) + (values.get("", 0.0) if main else 0.0)


def communication(m: Sums, reached: int | None, profiles: int | None) -> dict[str, Any]:
    sent, bounced = total(m, "sent"), total(m, "bounced")
    reported = total(m, "delivered")
    # A channel without delivery reports (plain SMTP): delivered = sent - bounced.
    delivered = reported if reported else max(sent - bounced, 0.0)
    opens, clicks = total(m, "unique_opens"), total(m, "unique_clicks")
    unsub, complained = total(m, "unsubscribed"), total(m, "complained")
    return {"sent": int(sent), "delivered": int(delivered), "bounced": int(bounced),
            "failed": int(total(m, "failed")), "complained": int(complained),
            "unsubscribed": int(unsub), "unique_opens": int(opens),
            "unique_clicks": int(clicks), "open_rate": ratio(opens, delivered),
            "click_rate": ratio(clicks, delivered), "click_to_open": ratio(clicks, opens),
            "unsubscribe_rate": ratio(unsub, delivered), "bounce_rate": ratio(bounced, sent),
            "complaint_rate": ratio(complained, delivered), "reached": reached,
            "reach": ratio(reached, profiles)}


def sales(m: Sums, main: str, customers: int, repeaters: int) -> dict[str, Any]:
    orders = in_currency(m, "orders", main)
    revenue = in_currency(m, "revenue", main) - in_currency(m, "refunded", main)
    others = sorted({c for metric in ("orders", "refunded") for c in m.get(metric, {})}
                    - {main, ""})
    return {"currency": main or None, "orders": int(orders), "customers": customers,
            "revenue": round(revenue, 2),
            "gross_revenue": round(in_currency(m, "revenue", main), 2),
            "refunds": int(in_currency(m, "refunds", main)),
            "refunded": round(in_currency(m, "refunded", main), 2),
            "aov": None if not orders else round(revenue / orders, 2),
            "purchase_frequency": ratio(orders, customers),
            "repeat_rate": ratio(repeaters, customers),
            "other_currencies": {c: {"orders": int(m.get("orders", {}).get(c, 0)),
                                     "revenue": round(m.get("revenue", {}).get(c, 0.0)
                                                      - m.get("refunded", {}).get(c, 0.0), 2)}
                                 for c in others}}


def attribution(m: Sums, main: str, all_revenue: float | None) -> dict[str, Any]:
    revenue = in_currency(m, "attributed_revenue", main) - \
        in_currency(m, "attributed_refunded", main)
    return {"orders": int(in_currency(m, "attributed_orders", main)),
            "revenue": round(revenue, 2),
            "crm_share": ratio(revenue, all_revenue) if all_revenue and all_revenue > 0
            else None}


def nps(m: Sums) -> dict[str, Any]:
    p, d = total(m, "nps_promoters"), total(m, "nps_detractors")
    n = total(m, "nps_responses")
    return {"responses": int(n), "promoters": int(p), "passives": int(total(m, "nps_passives")),
            "detractors": int(d),
            "score": None if not n else round(100 * (p - d) / n, 2)}


def moves(m: Sums) -> dict[str, int]:
    return {k.removeprefix("move:"): int(total(m, k)) for k in sorted(m)
            if k.startswith("move:") and total(m, k)}


def retention(previous: int, kept: int) -> dict[str, Any]:
    """Customers of the previous window of equal length who ordered again in this one."""
    rate = ratio(kept, previous)
    return {"previous_customers": previous, "retained_customers": kept,
            "retention_rate": rate, "churn_rate": None if rate is None else round(1 - rate, 6)}


def cohorts(rows: list[tuple[str, int, int]]) -> list[dict[str, Any]]:
    """(first-order month, months since, customers ordering) -> per cohort, the share of
    the cohort still ordering that many months later (month 0 is the cohort itself)."""
    sizes = {month: n for month, since, n in rows if since == 0}
    out: dict[str, dict[str, Any]] = {}
    for month, since, n in sorted(rows):
        size = sizes.get(month)
        if not size:
            continue
        entry = out.setdefault(month, {"month": month, "customers": size, "still_ordering": []})
        entry["still_ordering"].append({"months_since": since, "customers": n,
                                        "share": ratio(n, size)})
    return list(out.values())
