"""The rebuild as the consumer would do it: the workspace's history replayed in time order
through the consumer's own rollup writer (`kpis_store.write`), a page at a time. The
reference the set-based rebuild (services/profile/kpis_rebuild_sql.py) is compared with."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.profile import kpis_store
from services.profile import repository as repo
from services.profile.domain.kpi_facts import KpiFacts
from services.profile.domain.kpis import BITS
from shared.contracts.delivery import DeliveryStatus

_STATUS = {s.value: s for s in DeliveryStatus}
_EMPTIED = ("kpi_bits", "kpi_firsts", "kpi_touches", "kpi_orders", "kpi_customer_days",
            "kpi_money")


async def replay(engine: AsyncEngine, ws: str, page: int = 1) -> None:
    """`page` events per batch: 1 is the consumer meeting the history in time order."""
    async with engine.begin() as conn:
        for table in _EMPTIED:
            await repo.fetch(conn, f"DELETE FROM profile.{table} WHERE "  # noqa: S608
                             "workspace_id = $1", ws)
        await repo.fetch(conn, "DELETE FROM profile.kpi_counts WHERE workspace_id = $1 AND "
                         "metric NOT LIKE 'move:%'", ws)
        convs = await repo.conventions_for(conn, [ws])
        conv = convs[ws]
        after = (datetime(1970, 1, 1, tzinfo=UTC), "")
        while True:
            rows = await repo.fetch(
                conn, "SELECT event_id, profile_id, name, properties, timestamp FROM "
                "profile.events WHERE workspace_id = $1 AND (timestamp, event_id) > ($2, $3) "
                "ORDER BY timestamp, event_id LIMIT $4", ws, after[0], after[1], page)
            if not rows:
                break
            facts = KpiFacts()
            for r in rows:
                props = r["properties"] or {}
                if r["event_id"].startswith("delivery:"):
                    _delivery(facts, ws, r, props)
                elif r["name"]:
                    facts.track(ws, r["profile_id"], r["event_id"], r["name"], props,
                                r["timestamp"], conv)
            members = await repo.memberships(conn, {r["profile_id"]: ws for r in rows})
            await kpis_store.write(conn, facts, convs, lambda pid: pid, {}, members, [],
                                   datetime.now(UTC))
            after = (rows[-1]["timestamp"], rows[-1]["event_id"])


def _delivery(facts: KpiFacts, ws: str, r: Any, props: dict[str, Any]) -> None:
    status = _STATUS.get(props.get("status"))  # type: ignore[arg-type]
    if status is None:
        return
    journey = props.get("journey")
    facts.delivery(ws, r["profile_id"], str(props.get("message_id") or r["event_id"]), status,
                   str(props.get("channel") or ""),
                   journey.get("key") if isinstance(journey, dict) else None,
                   props.get("broadcast"), props.get("template"), r["timestamp"],
                   bool(props.get("test")), props.get("rule"))


async def rollups(engine: AsyncEngine, ws: str) -> dict[str, set[tuple[Any, ...]]]:
    """Every rollup row of the workspace (sums rounded; zero counters left out)."""
    out: dict[str, set[tuple[Any, ...]]] = {}
    async with engine.connect() as conn:
        out["kpi_counts"] = {(r[0], r[1], r[2], r[3], r[4], r[5], round(r[6], 6))
                             for r in await repo.fetch(
            conn, "SELECT day, dim, key, segment, metric, currency, value FROM "
            "profile.kpi_counts WHERE workspace_id = $1 AND round(value::numeric, 6) <> 0 "
            "AND metric NOT LIKE 'move:%'", ws)}
        for table, cols in (
                ("kpi_firsts", "message_id, kind"),
                ("kpi_touches", "message_id, kind, profile_id, at, channel, journey, "
                                "broadcast, template"),
                ("kpi_orders", "order_key, profile_id, at, day, round(revenue::numeric, 6), "
                               "currency, round(refunded::numeric, 6), segments, message_id, "
                               "channel, journey, broadcast, template"),
                ("kpi_customer_days", "profile_id, day, currency, orders, "
                                      "round(revenue::numeric, 6)"),
                ("kpi_control", "profile_id, since")):
            rows = await repo.fetch(conn, f"SELECT {cols} FROM profile.{table} "  # noqa: S608
                                    "WHERE workspace_id = $1", ws)
            out[table] = {tuple(tuple(v) if isinstance(v, list) else v for v in r)
                          for r in rows}
        # The bitmaps as who is in them (numbers differ between a rebuild and a replay):
        # (figure, dim, key, segment, day, profile id, twice that day or None).
        out["kpi_bits"] = {tuple(r) for r in await repo.fetch(
            conn, "SELECT b.figure, b.dim, b.key, b.segment, b.day, k.profile_id, CASE WHEN "
            "b.twice IS NOT NULL THEN get_bit(b.twice, i) END FROM profile.kpi_bits b CROSS "
            "JOIN generate_series(0, $2 - 1) AS i JOIN profile.kpi_numbers k ON "
            "k.workspace_id = b.workspace_id AND k.n = b.chunk * $2 + i WHERE "
            "b.workspace_id = $1 AND get_bit(b.bits, i) = 1", ws, BITS)}
    return out


