"""The answer's people figures OR-ed in the process (kpis_read._from_days: the day bitmaps
read in one statement) against the same figures OR-ed in Postgres (_people, _retention,
_retention_series, _cohorts: what a window reads past kpis_read.ROWS_IN_PROCESS day rows),
on random bitmaps over several chunks and months: chunks missing on some days, customer
rows without `twice`, a reporting segment, windows of each interval, partial and whole,
crossing months."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.profile import kpis_read
from services.profile.domain.conventions import Conventions
from services.profile.domain.kpis import BITS
from shared.db import create_engine

pytestmark = pytest.mark.integration
FIRST_DAY = date(2026, 8, 20)  # the rollups' history: 20 August .. 6 December
DAYS = 109
CHUNKS = 4


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


def _bits(rng: random.Random, density: float) -> str:
    out = bytearray(b"0" * BITS)
    for i in rng.sample(range(BITS), rng.randrange(1, int(2 * density * BITS) + 2)):
        out[i] = ord("1")
    return out.decode()


async def _load(engine: AsyncEngine, ws: str) -> None:
    rng = random.Random(15)
    rows: list[dict[str, Any]] = []
    for i in range(DAYS):
        day = FIRST_DAY + timedelta(days=i)
        for chunk in range(CHUNKS):
            for figure, dim, key, segment in (("customer", "", "", ""), ("reached", "", "", ""),
                                              ("reached", "journey", "j1", ""),
                                              ("customer", "", "", "vip"),
                                              ("reached", "", "", "vip")):
                if rng.random() < 0.2:  # nobody of this chunk that day
                    continue
                density = 0.002 if figure == "customer" else 0.01
                twice = None
                if figure == "customer" and rng.random() < 0.9:
                    twice = _bits(rng, 0.0005)
                rows.append({"ws": ws, "figure": figure, "dim": dim, "key": key,
                             "segment": segment, "day": day, "chunk": chunk,
                             "bits": _bits(rng, density), "twice": twice})
    async with engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO profile.kpi_bits (workspace_id, figure, dim, key, segment, day, chunk, "
            "bits, twice) VALUES (:ws, :figure, :dim, :key, :segment, :day, :chunk, "
            "CAST(CAST(:bits AS text) AS bit(8192)), "
            "CAST(CAST(:twice AS text) AS bit(8192)))"), rows)


async def _both(engine: AsyncEngine, w: kpis_read.Window) -> tuple[Any, Any]:
    spans = kpis_read._series_spans(w)
    async with engine.connect() as conn:
        people, retention, kept_by, cohorts = await kpis_read._from_days(conn, w, spans)
        in_process = (
            {k: v for k, v in people.items() if v != (0, 0)}, retention,
            {k: v for k, v in kept_by.items() if v != (0, 0)}, sorted(cohorts))
        in_postgres = (
            {k: v for k, v in (await kpis_read._people(conn, w)).items() if v != (0, 0)},
            await kpis_read._retention(conn, w),
            {k: v for k, v in (await kpis_read._retention_series(
                conn, w, [(lo, hi) for _, lo, hi in spans])).items() if v != (0, 0)},
            sorted(await kpis_read._cohorts(conn, w)))
    return in_process, in_postgres


async def test_people_figures_in_process_equal_postgres(engine: AsyncEngine,
                                                        unique: str) -> None:
    ws = f"kpi-days-{unique}"
    await _load(engine, ws)
    windows = [("day", date(2026, 11, 7), date(2026, 12, 6)),  # the bench's 30 days
               ("day", date(2026, 11, 1), date(2026, 11, 30)),
               ("week", date(2026, 11, 2), date(2026, 11, 29)),  # whole weeks
               ("week", date(2026, 10, 14), date(2026, 11, 19)),  # partial ends
               ("month", date(2026, 9, 1), date(2026, 11, 30)),
               ("month", date(2026, 9, 15), date(2026, 12, 6)),
               ("day", date(2026, 8, 18), date(2026, 8, 25))]  # before the history
    checked = 0
    for interval, first, last in windows:
        for dim, key, segment in (("", "", ""), ("journey", "j1", ""), ("", "", "vip"),
                                  ("journey", "nobody", "")):
            w = kpis_read.Window(ws, first, last, interval, dim, key, segment)
            assert kpis_read._fits(kpis_read._days_read(w, kpis_read._series_spans(w)),
                                   CHUNKS)
            in_process, in_postgres = await _both(engine, w)
            assert in_process == in_postgres, (interval, first, last, dim, key, segment)
            checked += bool(in_process[0])
    assert checked >= 20  # the windows hold people: the comparison is not of empties


async def test_a_long_window_ors_in_postgres(engine: AsyncEngine, unique: str) -> None:
    """Past ROWS_IN_PROCESS day rows the answer reads the ORs from Postgres: the same
    figures. The bench's 30 days at 1 M profiles (122 chunks) fit; six months there, or 30
    days of 10 M profiles, do not."""
    ws = f"kpi-days-{unique}"
    await _load(engine, ws)
    w = kpis_read.Window(ws, date(2026, 6, 1), date(2026, 12, 6), "month", "", "", "")
    days = kpis_read._days_read(w, kpis_read._series_spans(w))
    assert not kpis_read._fits(days, 122) and kpis_read._fits(days, CHUNKS)
    month = kpis_read.Window(ws, date(2026, 11, 7), date(2026, 12, 6), "day", "", "", "")
    assert kpis_read._fits(kpis_read._days_read(month, kpis_read._series_spans(month)), 122)
    assert not kpis_read._fits(kpis_read._days_read(month, kpis_read._series_spans(month)),
                               1221)
    in_process, in_postgres = await _both(engine, w)
    assert in_process == in_postgres and in_process[0]


async def test_the_answer_is_the_same_on_either_path(engine: AsyncEngine, unique: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole answer (series, totals, retention, cohorts) with the folds in the process
    and, ROWS_IN_PROCESS set to nothing, in Postgres."""
    ws = f"kpi-days-{unique}"
    await _load(engine, ws)
    conv = Conventions()
    for interval, first, last, dim, key, segment in (
            ("day", date(2026, 11, 7), date(2026, 12, 6), "", "", ""),
            ("week", date(2026, 10, 14), date(2026, 11, 19), "journey", "j1", ""),
            ("month", date(2026, 9, 15), date(2026, 12, 6), "", "", "vip")):
        w = kpis_read.Window(ws, first, last, interval, dim, key, segment)
        async with engine.connect() as conn:
            in_process = await kpis_read.answer(conn, w, conv)
        with monkeypatch.context() as m:
            m.setattr(kpis_read, "ROWS_IN_PROCESS", 0)
            async with engine.connect() as conn:
                in_postgres = await kpis_read.answer(conn, w, conv)
        assert in_process == in_postgres
        assert in_process["totals"]["sales"]["customers"] > 0
