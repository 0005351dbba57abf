"""The set-based preview and audience against Postgres agree with the per-recipient
decision the sending worker makes (`classify` on each snapshot), on awkward data: odd
addresses, unsubscribes by channel and topic, zones (none, unknown, several), the control
group, earlier sends under rolling and calendar-day caps, quiet hours, `local_time`, and
condition trees SQL decides fully or in part."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.journey.broadcasts.audience import audience
from services.journey.broadcasts.preview import SAMPLE, preview
from services.journey.broadcasts.sender import freeze, start_moment
from services.journey.domain.broadcast import BroadcastDocument, classify, reason_of
from services.journey.domain.policy import ContactPolicy, PastSend, TemplateMeta, local_due
from services.journey.domain.timing import zone
from shared.db.driver import driver
from shared.db.engine import create_engine

pytestmark = pytest.mark.integration

WS_ZONE = "America/New_York"
ZONES = ["Europe/Paris", "Asia/Tokyo", None, "", "Not/AZone", "Pacific/Kiritimati"]
EMAILS: list[Any] = ["a@x.test", "", None, 0, False, [], "b@x.test", "c@x.test"]
CONSENTS: list[Any] = [None, {"email": False}, {"topic:news": False}, {"topic:other": False},
                       {"email": True}, {}]
TRAITS: list[Any] = [{"vip": True, "orders": 3, "city": "Paris", "tags": ["a", "b"]},
                     {"vip": "yes", "orders": "7", "city": "Lyon", "tags": "abc"},
                     {"vip": 1, "orders": 12.5, "tags": ["b"]},
                     {"orders": None, "city": "Paris"},
                     {"vip": False, "orders": " 9 ", "tags": []}]


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=2)
    yield engine
    await engine.dispose()


def _snapshots() -> list[tuple[str, dict[str, Any], bool]]:
    out = []
    combos = itertools.product(ZONES, EMAILS, CONSENTS, TRAITS)
    for n, (tz, email, consent, traits) in enumerate(itertools.islice(combos, 0, None, 7)):
        snap: dict[str, Any] = {"profile_id": f"p{n:04d}", "traits": traits,
                                "segments": ["vip"] if n % 5 else []}
        if tz is not None:
            snap["timezone"] = tz
        if email is not None or n % 2:
            snap["email"] = email
        if consent is not None:
            snap["consent"] = consent
        if n % 11 == 0:
            snap["reachable"] = {"email": False}
        out.append((f"p{n:04d}", snap, n % 9 == 0))
    return out


def _sends(now: datetime, ids: list[str]) -> list[tuple[str, str, str | None, str, datetime]]:
    """(profile, channel, topic, category, sent_at): 0-3 earlier sends per profile."""
    out = []
    for n, pid in enumerate(ids):
        for k in range(n % 4):
            out.append((pid, "sms" if (n + k) % 7 == 0 else "email",
                        "news" if k % 2 else None,
                        "transactional" if (n + k) % 10 == 0 else "marketing",
                        now - timedelta(hours=3 + 9 * k + n % 13)))
    return out


async def _load(engine: AsyncEngine, ws: str, now: datetime
                ) -> tuple[list[tuple[str, dict[str, Any], bool]], dict[str, list[PastSend]]]:
    rows = _snapshots()
    sends = _sends(now, [pid for pid, _, _ in rows])
    async with engine.begin() as conn:
        db = await driver(conn)
        await db.execute(
            "INSERT INTO journey.snapshots (workspace_id, profile_id, snapshot, segments, "
            "control) SELECT $1, pid, snap::jsonb, ARRAY(SELECT jsonb_array_elements_text("
            "snap::jsonb -> 'segments')), ctl FROM unnest($2::varchar[], $3::text[], "
            "$4::bool[]) AS u(pid, snap, ctl)", ws, [r[0] for r in rows],
            [orjson.dumps(r[1]).decode() for r in rows], [r[2] for r in rows])
        await db.execute(
            "INSERT INTO journey.sends (workspace_id, idempotency_key, profile_id, channel, "
            "journey_key, sent_at, topic, category) SELECT $1, 'k' || n, pid, ch, 'j', at, "
            "topic, cat FROM unnest($2::varchar[], $3::varchar[], $4::varchar[], "
            "$5::varchar[], $6::timestamptz[]) WITH ORDINALITY AS u(pid, ch, topic, cat, at, n)",
            ws, *[list(col) for col in zip(*sends, strict=True)])
    past: dict[str, list[PastSend]] = {}
    for pid, channel, topic, category, at in sends:
        past.setdefault(pid, []).append(PastSend(channel, topic, category, at))
    return rows, past


def _expected(doc: BroadcastDocument, policy: ContactPolicy, meta: TemplateMeta,
              rows: list[tuple[str, dict[str, Any], bool]], past: dict[str, list[PastSend]],
              now: datetime) -> tuple[list[str], list[tuple[str, str]]]:
    """Per recipient, as the worker decides at each one's moment: (sent, suppressed)."""
    at = start_moment(doc, now)
    sent, held = [], []
    for pid, snap, control in sorted(rows):
        if not doc.member(snap, now):
            continue
        tz = zone(snap.get("timezone") or WS_ZONE)
        when = local_due(doc.send_at or now, doc.local_time, tz, now) if doc.local_time else at
        verdict = classify(doc, policy, meta, snap, past.get(pid, []), when, tz,
                           control=control, key="b")
        if verdict.sends:
            sent.append(pid)
        else:
            held.append((pid, reason_of(verdict)))
    return sent, held


POLICY = ContactPolicy.model_validate({
    "caps": [{"channel": "email", "max": 2, "per": "calendar_day"},
             {"channel": "email", "topic": "news", "max": 1, "per": "P2D"},
             {"channel": "sms", "max": 1, "per": "P1D"}],
    "quiet_hours": {"start": "21:00", "end": "09:00"}})
CONDITIONS: list[dict[str, Any]] = [
    {"any": [{"field": "profile.traits.vip", "op": "eq", "value": True},
             {"field": "profile.traits.city", "op": "in", "value": ["Paris", "Rome"]}]},
    {"all": [{"field": "profile.traits.orders", "op": "gte", "value": 5},
             {"not": {"field": "profile.traits.tags", "op": "contains", "value": "a"}}]},
    {"any": [{"field": "profile.traits.tags", "op": "contains", "value": "b"},
             {"field": "profile.traits.city", "op": "neq", "value": "Paris"},
             {"field": "profile.traits.vip", "op": "exists", "value": False}]},
    {"not": {"field": "profile.traits.orders", "op": "lt", "value": 10}},
]


def _afternoon() -> datetime:
    """Today 14:xx UTC: quiet hours (21:00-09:00 local) hide the caps of most recipients
    between 02:00 and 08:00 UTC, so the clock is pinned to an hour where every rule has
    members to stop; the minutes still vary from run to run. Nothing here reads the
    database clock: `now` is passed to every query."""
    return datetime.now(UTC).replace(hour=14)


@pytest.mark.parametrize("case", [
    {"segment": "vip"},
    {"segment": "vip", "local_time": "12:00"},
    {"segment": "vip", "template": "receipt"},
    *({"condition": c} for c in CONDITIONS),
    {"condition": CONDITIONS[1], "local_time": "10:30"},
])
async def test_the_preview_is_what_the_worker_decides_per_recipient(
        engine: AsyncEngine, case: dict[str, Any]) -> None:
    ws, now = f"ws-{uuid.uuid4().hex[:10]}", _afternoon()
    rows, past = await _load(engine, ws, now)
    doc = BroadcastDocument.model_validate({"template": "news"} | case)
    meta = (TemplateMeta("email", "transactional") if doc.template == "receipt"
            else TemplateMeta("email", "marketing", "news"))
    sent, held = _expected(doc, POLICY, meta, rows, past, now)
    assert sent and held  # the data exercises both sides
    async with engine.connect() as conn:
        members = await audience(conn, ws, doc, now)
        found = await preview(conn, members, "b", POLICY, meta, now, start_moment(doc, now),
                              WS_ZONE)
    reasons: dict[str, int] = {}
    for _pid, reason in held:
        reasons[reason] = reasons.get(reason, 0) + 1
    if doc.template == "news":  # marketing: every rule has members to stop
        assert {"cap", "undeliverable", "no_consent", "control_group"} <= set(reasons)
    assert (found.recipients, found.suppressed) == (len(sent), reasons)
    assert found.sample == sent[:SAMPLE]
    assert found.suppressed_sample == [{"profile_id": p, "reason": r} for p, r in held[:SAMPLE]]
    async with engine.begin() as conn:
        assert await freeze(conn, ws, "b", doc, now, WS_ZONE) == len(sent) + len(held)
        due = dict(await (await driver(conn)).fetch(
            "SELECT profile_id, due_at FROM journey.broadcast_audience WHERE workspace_id = $1",
            ws))
    snaps = {pid: snap for pid, snap, _ in rows}
    assert sorted(due) == sorted(sent + [p for p, _ in held])
    for pid, at in due.items():
        tz = zone(snaps[pid].get("timezone") or WS_ZONE)
        assert at == (local_due(now, doc.local_time, tz, now) if doc.local_time else now)


async def test_python_decides_only_the_rows_sql_cannot(engine: AsyncEngine) -> None:
    """Strings, lists, existence: exact in SQL, no row left for Python. A number compared
    with a numeric string, or `true` with 1, SQL leaves to Python, row by row."""
    ws, now = f"ws-{uuid.uuid4().hex[:10]}", datetime.now(UTC)
    rows, _ = await _load(engine, ws, now)

    def doc(cond: dict[str, Any]) -> BroadcastDocument:
        return BroadcastDocument.model_validate({"template": "news", "condition": cond})
    async with engine.connect() as conn:
        assert (await audience(conn, ws, doc(CONDITIONS[2]), now)).decided == ()
        numbers = {"field": "profile.traits.orders", "op": "gte", "value": 5}
        for cond, field in ((numbers, "orders"), (CONDITIONS[0], "vip")):
            decided = (await audience(conn, ws, doc(cond), now)).decided
            values = {repr(snap["traits"].get(field)) for pid, snap, _ in rows
                      if pid in decided}
            assert decided and values <= {"'7'", "' 9 '", "1"}, values
