"""Computed metrics and the compact snapshot every profile event carries (pure)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from services.profile.domain.conventions import Conventions
from services.profile.domain.lifecycle import DAY, rhythm_days
from services.profile.domain.state import ProfileState, reachable
from shared.contracts.profile import ProfileSnapshot


def nps_category(score: int | None) -> str | None:
    if score is None:
        return None
    return "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"


def metrics(p: ProfileState, now: datetime, conv: Conventions) -> dict[str, Any]:
    """Every number a marketer segments by; timestamps as ISO text, durations in days."""
    net = round(p.gross_revenue - p.refunded, 2)
    out: dict[str, Any] = {
        "event_count": p.event_count,
        "order_count": p.order_count,
        "revenue": net,
        "gross_revenue": round(p.gross_revenue, 2),
        "refund_count": p.refund_count,
        "refunded": round(p.refunded, 2),
        "average_order_value": round(net / p.order_count, 2) if p.order_count else None,
        "first_order_at": _iso(p.first_order_at),
        "last_order_at": _iso(p.last_order_at),
        "days_since_last_order": _days(now, p.last_order_at),
        "mean_interpurchase_days": (
            round(rhythm_days(p.order_count, p.first_order_at, p.last_order_at, conv), 2)
            if p.order_count >= 2 else None),
        "next_order_expected_at": _iso(
            p.last_order_at + timedelta(days=rhythm_days(p.order_count, p.first_order_at,
                                                        p.last_order_at, conv))
            if p.last_order_at is not None else None),
        "purchase_frequency": _per_month(p.order_count, p.first_order_at, now),
        "days_since_last_seen": _days(now, p.last_seen_at),
        "last_open_at": _iso(p.last_open_at),
        "last_click_at": _iso(p.last_click_at),
        "unsubscribed_channels": sorted(k for k, v in p.consent.items()
                                        if not k.startswith("topic:") and not v["subscribed"])
        if p.consent else [],
        "nps_score": p.nps_score,
        "nps_category": nps_category(p.nps_score),
    }
    if p.rfm:
        out.update(rfm_recency=p.rfm["r"], rfm_frequency=p.rfm["f"], rfm_monetary=p.rfm["m"],
                   rfm_score=f"{p.rfm['r']}{p.rfm['f']}{p.rfm['m']}")
    out.update(p.predictions)  # churn_risk, p_alive, expected_orders, predicted_ltv
    return out


def snapshot_fields(p: ProfileState, now: datetime, conv: Conventions) -> dict[str, Any]:
    """The snapshot as the JSON object the shared codec writes for a ProfileSnapshot: its
    fields in declaration order, None-valued fields left out, `segments` empty (the caller
    fills it in). Every container is new or a copy, so later changes to `p` within the same
    batch never show in a snapshot already taken (each event carries the profile as it left
    it)."""
    out: dict[str, Any] = {"profile_id": p.id}
    if p.user_id is not None:
        out["user_id"] = p.user_id
    if p.email is not None:
        out["email"] = p.email
    if p.phone is not None:
        out["phone"] = p.phone
    if p.timezone is not None:
        out["timezone"] = p.timezone
    out["traits"] = dict(p.traits)
    out["metrics"] = metrics(p, now, conv)
    out["segments"] = []
    out["push_tokens"] = [t for t, v in p.push_tokens.items() if v["deliverable"]]
    out["consent"] = {k: bool(v["subscribed"]) for k, v in p.consent.items()}
    out["reachable"] = reachable(p)
    if p.lifecycle_stage is not None:
        out["lifecycle_stage"] = p.lifecycle_stage
    if p.rfm and p.rfm.get("segment") is not None:
        out["rfm_segment"] = p.rfm["segment"]
    if p.codes:
        out["codes"] = dict(p.codes)
    if conv.currency:  # the workspace's, for messaging's `money` and `date` filters
        out["workspace_currency"] = conv.currency
    if conv.timezone != "UTC":
        out["workspace_timezone"] = conv.timezone
    return out


def snapshot(p: ProfileState, segments: list[str], now: datetime,
             conv: Conventions) -> ProfileSnapshot:
    # Built from trusted state: model_construct skips re-validating every nested dict.
    fields = snapshot_fields(p, now, conv)
    fields["segments"] = sorted(segments)
    return ProfileSnapshot.model_construct(**fields)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _days(now: datetime, then: datetime | None) -> float | None:
    return round(max((now - then).total_seconds(), 0.0) / DAY, 2) if then else None


def _per_month(orders: int, first: datetime | None, now: datetime) -> float | None:
    """Orders per 30 days since the first order (at least one month of tenure)."""
    if not orders or first is None:
        return None
    months = max((now - first).total_seconds() / DAY / 30.0, 1.0)
    return round(orders / months, 3)
