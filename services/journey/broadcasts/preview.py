"""A broadcast's audience preview, set-based: one grouped query over journey's profile
snapshots, then the policy decided once per class of alike members, then the samples by
LIMIT.

A member's fate depends only on: control group membership, whether the channel's address
is deliverable, whether they unsubscribed (channel or the template's topic), their zone
(quiet hours, `local_time`, a `calendar_day` cap), and whether their sends already reach a
cap. One grouped scan counts the members per class of the first four; the customers at a
cap come from the sends (usually far fewer), and move to their class's capped twin. Each
class is then judged by `judge`, the function the sending worker applies to each
recipient, on a stand-in profile with the same facts. So the preview is what will be
sent, without reading 200,000 snapshots into Python.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from services.journey.broadcasts.audience import SNAPSHOTS, ZONE, Audience
from services.journey.broadcasts.condition_sql import Params
from services.journey.domain.broadcast import judge, reason_of
from services.journey.domain.policy import (
    ContactPolicy,
    PolicyCap,
    TemplateMeta,
    applicable_caps,
    cap_since,
    local_due,
)
from services.journey.domain.timing import zone
from services.journey.tables import sends
from shared.contracts.send import ADDRESS_FIELD
from shared.db.driver import driver

SAMPLE = 10
_SENDS = f"{sends.schema}.{sends.name}"
# What Python counts as false (`bool(value)`) among JSON values: an address like these is
# no address.
_FALSY = "('\"\"', 'null', 'false', '0', '[]', '{}')"
# (control, deliverable, refused, zone, capped): the facts a member's fate depends on.
Klass = tuple[bool, bool, bool, str, bool]


@dataclass
class Preview:
    recipients: int
    suppressed: dict[str, int]
    sample: list[str]
    suppressed_sample: list[dict[str, str]]


@dataclass(frozen=True)
class _Caps:
    """The caps that count this broadcast's sends, with the moment each counts from, per
    zone where it depends on it (`local_time`, `calendar_day`)."""

    caps: list[tuple[int, PolicyCap]]
    since: list[dict[str, datetime]]
    default_since: list[datetime]

    @property
    def zoned(self) -> bool:
        return any(self.since)

    def lookback(self) -> datetime:
        return min([*self.default_since, *(t for s in self.since for t in s.values())])


def _sends_of(p: Params, workspace: str, channel: str, caps: _Caps) -> str:
    return (f"x.workspace_id = {p(workspace, 'varchar')} AND x.channel = {p(channel, 'text')} "
            f"AND x.category IS DISTINCT FROM 'transactional' "
            f"AND x.sent_at > {p(caps.lookback(), 'timestamptz')}")


def _member_columns(p: Params, channel: str, meta: TemplateMeta | None,
                    capped: list[str]) -> str:
    """profile_id, control, deliverable, refused, zone, capped of the snapshot `s`
    (deliverable and refused as guards.reachable and policy.consent_refused read a
    profile)."""
    def flagged_false(outer: str, inner: str) -> str:
        value = orjson.dumps({outer: {inner: False}}).decode()
        return f"s.snapshot @> {p(value, 'text')}::jsonb"

    address = f"s.snapshot -> {p(ADDRESS_FIELD[channel], 'text')}"
    deliverable = (f"coalesce({address} NOT IN {_FALSY}, false) "
                   f"AND NOT {flagged_false('reachable', channel)}")
    refused = flagged_false("consent", channel)
    if meta is not None and meta.topic is not None:
        refused += f" OR {flagged_false('consent', f'topic:{meta.topic}')}"
    # An array parameter under a custom plan (_plan_for_a_scan): hashed, not searched.
    is_capped = f"s.profile_id = ANY({p(capped, 'varchar[]')})" if capped else "false"
    return (f"s.profile_id, s.control, ({deliverable}) AS deliverable, ({refused}) AS "
            f"refused, {ZONE} AS zone, {is_capped} AS capped")


async def preview(conn: AsyncConnection, aud: Audience, key: str, policy: ContactPolicy,
                  meta: TemplateMeta | None, now: datetime, at: datetime, workspace_zone: str
                  ) -> Preview:
    doc = aud.doc

    def moment(raw: str) -> tuple[datetime, ZoneInfo]:
        tz = zone(raw or workspace_zone)
        when = local_due(doc.send_at or now, doc.local_time, tz, now) if doc.local_time \
            else at
        return when, tz

    await _plan_for_a_scan(conn)
    counts = await _classes(conn, aud, meta)
    caps = _caps(aud, policy, meta, moment, {klass[3] for klass in counts})
    capped = await _capped(conn, aud, caps)
    if capped:
        # Those at a cap move to their class's capped twin (a few rows, by primary key).
        for _pid, control, deliverable, refused, raw, _no in await _members(
                conn, aud, meta, capped):
            counts[(control, deliverable, refused, raw, False)] -= 1
            twin = (control, deliverable, refused, raw, True)
            counts[twin] = counts.get(twin, 0) + 1
    rows = [(*klass, n) for klass, n in counts.items() if n > 0]
    reasons: dict[Klass, str | None] = {}
    suppressed: dict[str, int] = {}
    recipients = 0
    for control, deliverable, refused, raw, is_capped, n in rows:
        klass: Klass = (control, deliverable, refused, raw, is_capped)
        when, tz = moment(raw)
        reason = reasons[klass] = _reason(aud, policy, meta, klass, when, tz, key)
        if reason is None:
            recipients += n
        else:
            suppressed[reason] = suppressed.get(reason, 0) + n
    sample = [pid for pid, _ in await _sample(
        conn, aud, meta, capped, [k for k, r in reasons.items() if r is None])]
    held = await _sample(conn, aud, meta, capped, [k for k, r in reasons.items() if r])
    return Preview(recipients, suppressed, sample, [
        {"profile_id": pid, "reason": reason} for pid, klass in held
        if (reason := reasons.get(klass))])


def _reason(aud: Audience, policy: ContactPolicy, meta: TemplateMeta | None, klass: Klass,
            when: datetime, tz: ZoneInfo, key: str) -> str | None:
    """Why a class of members gets nothing (None: it is sent): `judge` on a stand-in
    profile with the class's facts; then a cap, which `judge` checks last."""
    control, deliverable, refused, _raw, capped = klass
    channel = aud.doc.channel
    stand_in: dict[str, Any] = {"consent": {channel: False} if refused else {}}
    if deliverable:
        stand_in[ADDRESS_FIELD[channel]] = ["stand-in"]
    verdict = judge(aud.doc, policy, meta, stand_in, [], when, tz, control=control, key=key)
    if not verdict.sends:
        return reason_of(verdict)
    return "cap" if capped else None


async def _classes(conn: AsyncConnection, aud: Audience, meta: TemplateMeta | None
                   ) -> dict[Klass, int]:
    """How many members per class, caps aside (one grouped scan of the audience)."""
    p = Params()
    where = aud.where(p)
    columns = _member_columns(p, aud.doc.channel, meta, [])
    rows = await (await driver(conn)).fetch(
        f"SELECT m.control, m.deliverable, m.refused, m.zone, count(*) FROM "
        f"(SELECT {columns} FROM {SNAPSHOTS} s WHERE {where}) m GROUP BY 1, 2, 3, 4", *p.args)
    return {(c, d, r, z, False): n for c, d, r, z, n in rows}


async def _members(conn: AsyncConnection, aud: Audience, meta: TemplateMeta | None,
                   ids: list[str]) -> list[Any]:
    """These customers' rows of the audience (those of them in it), with their facts."""
    p = Params()
    where = aud.where(p)
    columns = _member_columns(p, aud.doc.channel, meta, [])
    return list(await (await driver(conn)).fetch(
        f"SELECT {columns} FROM {SNAPSHOTS} s WHERE {where} AND s.profile_id = "
        f"ANY({p(ids, 'varchar[]')})", *p.args))


def _caps(aud: Audience, policy: ContactPolicy, meta: TemplateMeta | None,
          moment: Callable[[str], tuple[datetime, ZoneInfo]], zones: set[str]) -> _Caps:
    caps = applicable_caps(policy, aud.doc.channel, meta)
    default_when, default_tz = moment("")
    default_since = [cap_since(cap, default_when, default_tz) for _, cap in caps]
    zoned = aud.doc.local_time is not None or any(
        not isinstance(cap.per, timedelta) for _, cap in caps)
    if not caps or not zoned:
        return _Caps(caps, [{} for _ in caps], default_since)
    moments = {raw: moment(raw) for raw in zones}
    return _Caps(caps, [{raw: cap_since(cap, when, tz) for raw, (when, tz) in moments.items()}
                        for _, cap in caps], default_since)


async def _plan_for_a_scan(conn: AsyncConnection) -> None:
    """Planner settings for these statements, whatever the statistics say. Snapshots
    loaded in bulk just before (a first import) leave the planner guessing a few hundred
    rows where there are 200,000: it then re-runs a join per row or sorts the whole
    audience. No JIT either: compiling costs more than it saves on a scan this size."""
    for setting in ("enable_nestloop = off", "enable_sort = off", "jit = off",
                    "plan_cache_mode = force_custom_plan"):
        await conn.exec_driver_sql(f"SET LOCAL {setting}")


async def _capped(conn: AsyncConnection, aud: Audience, caps: _Caps) -> list[str]:
    """The workspace's customers whose sends already reach one of the caps at their
    moment (as policy._blocked counts them: sends since the window began), read from the
    sends, usually far fewer than the audience. Where the window's start depends on the
    zone, SQL counts from the earliest start (a superset) and each candidate is decided
    with their own zone."""
    if not caps.caps:
        return []
    p = Params()
    counted: list[str] = []
    for (_index, cap), by_zone, default in zip(caps.caps, caps.since, caps.default_since,
                                               strict=True):
        topic = f" AND x.topic = {p(cap.topic, 'text')}" if cap.topic else ""
        earliest = min([*by_zone.values(), default])
        counted.append(f"count(*) FILTER (WHERE x.sent_at > {p(earliest, 'timestamptz')}"
                       f"{topic}) >= {p(cap.max, 'int')}")
    rows = await (await driver(conn)).fetch(
        f"SELECT x.profile_id, array_agg(x.sent_at), array_agg(x.topic) FROM {_SENDS} x "
        f"WHERE {_sends_of(p, aud.workspace_id, aud.doc.channel, caps)} "
        f"GROUP BY x.profile_id HAVING {' OR '.join(counted)}", *p.args)
    if not caps.zoned:
        return [pid for pid, _at, _topics in rows]
    p = Params()
    zones = dict(await (await driver(conn)).fetch(
        f"SELECT s.profile_id, {ZONE} FROM {SNAPSHOTS} s WHERE s.workspace_id = "
        f"{p(aud.workspace_id, 'varchar')} AND s.profile_id = "
        f"ANY({p([r[0] for r in rows], 'varchar[]')})", *p.args))
    out = []
    for pid, times, topics in rows:
        raw = zones.get(pid, "")
        for n, (_index, cap) in enumerate(caps.caps):
            start = caps.since[n].get(raw, caps.default_since[n])
            if sum(1 for at, topic in zip(times, topics, strict=True) if at > start and (
                    cap.topic is None or topic == cap.topic)) >= cap.max:
                out.append(pid)
                break
    return out


async def _sample(conn: AsyncConnection, aud: Audience, meta: TemplateMeta | None,
                  capped: list[str], classes: list[Klass]) -> list[tuple[str, Klass]]:
    """The first members (by profile id) of these classes, by LIMIT."""
    if not classes:
        return []
    p = Params()
    where = aud.where(p)
    columns = _member_columns(p, aud.doc.channel, meta, capped)
    wanted = ", ".join(
        f"({p(c, 'bool')}, {p(d, 'bool')}, {p(r, 'bool')}, {p(z, 'text')}, {p(k, 'bool')})"
        for c, d, r, z, k in classes)
    rows = await (await driver(conn)).fetch(
        f"SELECT m.* FROM (SELECT {columns} FROM {SNAPSHOTS} s WHERE {where}) m "
        f"WHERE (m.control, m.deliverable, m.refused, m.zone, m.capped) IN ({wanted}) "
        f"ORDER BY m.profile_id LIMIT {SAMPLE}", *p.args)
    return [(pid, (c, d, r, z, k)) for pid, c, d, r, z, k in rows]
