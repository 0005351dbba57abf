"""How profiles look on the API (pure shaping of rows)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.profile.domain.conventions import Conventions
from services.profile.domain.snapshot import metrics
from services.profile.domain.state import ProfileState, reachable


def public_profile(p: ProfileState, segments: list[str], conv: Conventions,
                   now: datetime) -> dict[str, Any]:
    return {
        "id": p.id, "user_id": p.user_id, "email": p.email, "phone": p.phone,
        "timezone": p.timezone, "traits": p.traits,
        "trait_seen": {k: {"first_seen_at": v[0], "last_seen_at": v[1]}
                       for k, v in p.trait_seen.items()},
        "event_count": p.event_count, "first_seen_at": p.first_seen_at.isoformat(),
        "last_seen_at": p.last_seen_at.isoformat(),
        "metrics": metrics(p, now, conv), "lifecycle_stage": p.lifecycle_stage,
        "rfm_segment": p.rfm.get("segment") if p.rfm else None,
        "segments": sorted(segments), "consent": p.consent, "reachable": reachable(p),
        "addresses": p.addresses, "codes": p.codes,
        "push_tokens": [{"token": t, **v} for t, v in p.push_tokens.items()],
    }


def summary(p: ProfileState) -> dict[str, Any]:
    """The short form search results list."""
    return {"id": p.id, "user_id": p.user_id, "email": p.email, "phone": p.phone,
            "lifecycle_stage": p.lifecycle_stage,
            "rfm_segment": p.rfm.get("segment") if p.rfm else None,
            "order_count": p.order_count, "last_seen_at": p.last_seen_at.isoformat()}
