"""State figures (base, lifecycle, value): a snapshot of the profiles table per local day.

Taken by the scheduled recompute; each pass overwrites the current day's row, so the last pass
of a day leaves the end-of-day figures. One row per reporting segment besides everybody ('').
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from services.profile.domain.conventions import Conventions
from services.profile.domain.kpis import local_day
from services.profile.repository import fetch

STAGES = ("new", "active", "reactivated", "at_risk", "lapsed", "churned")
RISK_BUCKETS = ("0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1")

_OK = "coalesce((p.{book}->'{ch}'->>'{flag}')::boolean, true)"
_SQL = f"""
SELECT count(*) AS profiles,
  count(*) FILTER (WHERE (p.first_seen_at AT TIME ZONE $3)::date = $4) AS new_profiles,
  count(*) FILTER (WHERE p.user_id IS NOT NULL OR p.email IS NOT NULL) AS known,
  count(*) FILTER (WHERE p.email IS NOT NULL AND {_OK.format(book='addresses', ch='email',
                   flag='deliverable')} AND {_OK.format(book='consent', ch='email',
                   flag='subscribed')}) AS reach_email,
  count(*) FILTER (WHERE p.phone IS NOT NULL AND {_OK.format(book='addresses', ch='sms',
                   flag='deliverable')} AND {_OK.format(book='consent', ch='sms',
                   flag='subscribed')}) AS reach_sms,
  count(*) FILTER (WHERE EXISTS (SELECT 1 FROM jsonb_each(p.push_tokens) t
                   WHERE (t.value->>'deliverable')::boolean) AND {_OK.format(
                   book='consent', ch='push', flag='subscribed')}) AS reach_push,
  count(*) FILTER (WHERE p.email IS NOT NULL) AS with_email,
  count(*) FILTER (WHERE p.phone IS NOT NULL) AS with_phone,
  count(*) FILTER (WHERE p.traits ?| array['name', 'first_name', 'last_name']) AS with_name,
  count(*) FILTER (WHERE p.timezone IS NOT NULL) AS with_timezone,
  count(*) FILTER (WHERE (p.consent->'email'->>'subscribed') = 'false'
                   OR (p.consent->'sms'->>'subscribed') = 'false'
                   OR (p.consent->'push'->>'subscribed') = 'false') AS unsubscribed,
  count(*) FILTER (WHERE (p.addresses->'email'->>'deliverable') = 'false'
                   OR (p.addresses->'sms'->>'deliverable') = 'false') AS undeliverable,
  count(*) FILTER (WHERE p.order_count > 0) AS customers,
  count(*) FILTER (WHERE p.lifecycle_stage IN ('new', 'active', 'reactivated'))
    AS active_customers,
  avg(p.gross_revenue - p.refunded) FILTER (WHERE p.order_count > 0) AS ltv_mean,
  percentile_cont(0.5) WITHIN GROUP (ORDER BY p.gross_revenue - p.refunded)
    FILTER (WHERE p.order_count > 0) AS ltv_median,
  sum((p.predictions->>'predicted_ltv')::float8) AS pltv_total,
  avg((p.predictions->>'predicted_ltv')::float8) AS pltv_mean,
  count(p.predictions->>'churn_risk') AS risk_n
FROM profile.profiles p {{join}} WHERE p.workspace_id = $1 {{where}}
"""
_STAGES = """SELECT coalesce(p.lifecycle_stage, 'none'), count(*) FROM profile.profiles p {join}
WHERE p.workspace_id = $1 {where} GROUP BY 1"""
_RISK = """SELECT least(floor((p.predictions->>'churn_risk')::float8 * 5), 4)::int, count(*)
FROM profile.profiles p {join} WHERE p.workspace_id = $1 {where}
AND p.predictions ? 'churn_risk' GROUP BY 1"""
_MEMBER = "JOIN profile.segment_members m ON m.profile_id = p.id AND m.workspace_id = $1 " \
          "AND m.segment_key = $2"


async def take(conn: AsyncConnection, workspace_id: str, conv: Conventions,
               now: datetime) -> int:
    """Snapshot today's (local) state for everybody and each reporting segment; how many."""
    day = local_day(now, conv.timezone)
    segments = [r[0] for r in await fetch(
        conn, "SELECT key FROM profile.segments WHERE workspace_id = $1 AND reporting",
        workspace_id)]
    rows = []
    for seg in ("", *segments):
        join, where = (_MEMBER, "") if seg else ("", "AND $2::text = ''")
        r = (await fetch(conn, _SQL.format(join=join, where=where), workspace_id, seg,
                         conv.timezone, day))[0]
        stages = dict(await fetch(conn, _STAGES.format(join=join, where=where),
                                  workspace_id, seg))
        risk = dict(await fetch(conn, _RISK.format(join=join, where=where), workspace_id, seg))
        rows.append((seg, orjson.dumps(figures(dict(r), stages, risk)).decode()))
    await fetch(
        conn, "INSERT INTO profile.kpi_state (workspace_id, day, segment, figures, taken_at) "
        "SELECT $1, $2, s, f::jsonb, $3 FROM unnest($4::text[], $5::text[]) AS t(s, f) "
        "ON CONFLICT (workspace_id, segment, day) DO UPDATE SET figures = excluded.figures, "
        "taken_at = excluded.taken_at", workspace_id, day, now, [r[0] for r in rows],
        [r[1] for r in rows])
    return len(rows)


def figures(r: dict[str, Any], stages: dict[str, int], risk: dict[int, int]) -> dict[str, Any]:
    """The snapshot's JSON: base, lifecycle stages, value (pure)."""
    n = r["profiles"]

    def share(k: str) -> float | None:
        return round(r[k] / n, 6) if n else None

    def money(v: float | None) -> float | None:
        return None if v is None else round(float(v), 2)

    return {
        "base": {"profiles": n, "new_profiles": r["new_profiles"], "known": r["known"],
                 "reachable": {"email": r["reach_email"], "sms": r["reach_sms"],
                               "push": r["reach_push"]},
                 "completeness": {"email": share("with_email"), "phone": share("with_phone"),
                                  "name": share("with_name"),
                                  "timezone": share("with_timezone")},
                 "unsubscribed": r["unsubscribed"], "undeliverable": r["undeliverable"]},
        "customers": r["customers"], "active_customers": r["active_customers"],
        "lifecycle": {s: int(stages.get(s, 0)) for s in STAGES},
        "value": {"customers": r["customers"],
                  "ltv_historic": {"mean": money(r["ltv_mean"]),
                                   "median": money(r["ltv_median"])},
                  "ltv_predicted": {"total": money(r["pltv_total"]),
                                    "mean": money(r["pltv_mean"])},
                  "churn_risk": {b: int(risk.get(i, 0)) for i, b in enumerate(RISK_BUCKETS)}},
    }
