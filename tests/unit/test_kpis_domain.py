"""KPI rollups, the pure parts: local days, intervals, attribution, figures, the report."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from rich.console import Console

from services.profile.domain import kpi_figures as fig
from services.profile.domain.kpis import (
    Rollup,
    Touch,
    attribute,
    cover,
    dims_of,
    interval_start,
    local_day,
    nps_bucket,
    whole_intervals,
)
from touchpoint.commands.kpis import report_tables

T = datetime(2026, 11, 10, 12, tzinfo=UTC)
CLICK, OPEN = timedelta(days=5), timedelta(days=1)


def touch(mid: str, kind: str, hours_before: float) -> Touch:
    return Touch(mid, kind, T - timedelta(hours=hours_before), "email", "j", None, "t")


def test_local_day_follows_the_workspace_zone() -> None:
    late = datetime(2026, 11, 1, 23, 30, tzinfo=UTC)
    assert local_day(late, "UTC") == date(2026, 11, 1)
    assert local_day(late, "Europe/Berlin") == date(2026, 11, 2)
    assert local_day(late, "America/New_York") == date(2026, 11, 1)


def test_intervals_start_on_monday_and_the_first() -> None:
    assert interval_start(date(2026, 11, 8), "week") == date(2026, 11, 2)  # a Sunday
    assert interval_start(date(2026, 2, 28), "month") == date(2026, 2, 1)
    assert whole_intervals(date(2026, 11, 2), date(2026, 11, 15), "week")
    assert not whole_intervals(date(2026, 11, 2), date(2026, 11, 14), "week")
    assert whole_intervals(date(2026, 2, 1), date(2026, 3, 31), "month")
    assert not whole_intervals(date(2026, 2, 2), date(2026, 3, 31), "month")


def test_attribution_prefers_the_last_click_then_the_last_open() -> None:
    touches = [touch("a", "click", 100), touch("b", "click", 30), touch("c", "open", 2)]
    assert attribute(T, touches, CLICK, OPEN).message_id == "b"  # type: ignore[union-attr]
    only_opens = [touch("c", "open", 2), touch("d", "open", 30)]  # d: outside the open window
    assert attribute(T, only_opens, CLICK, OPEN).message_id == "c"  # type: ignore[union-attr]
    assert attribute(T, [touch("x", "click", 121)], CLICK, OPEN) is None  # 5 days + 1 h
    assert attribute(T, [touch("y", "click", -1)], CLICK, OPEN) is None  # after the order
    # Arrival order does not matter: the same touches in any order give the same message.
    assert attribute(T, touches[::-1], CLICK, OPEN) == attribute(T, touches, CLICK, OPEN)


def test_rollup_fans_a_fact_out_to_dimensions_and_segments() -> None:
    r = Rollup()
    dims = dims_of("email", "welcome", None, "w1")
    r.count("ws", date(2026, 11, 2), dims, ["vip"], "sent")
    assert len(r.counts) == 4 * 2 and set(r.counts.values()) == {1.0}
    assert nps_bucket(9) == "nps_promoters" and nps_bucket(7) == "nps_passives" \
        and nps_bucket(6) == "nps_detractors"


def test_figures_rates_revenue_and_smtp_delivered() -> None:
    smtp = fig.communication({"sent": {"": 10}, "bounced": {"": 2},
                              "unique_opens": {"": 4}, "unique_clicks": {"": 2}}, 8, 16)
    assert (smtp["delivered"], smtp["open_rate"], smtp["click_to_open"], smtp["reach"]) == \
        (8, 0.5, 0.5, 0.5)
    m = {"orders": {"EUR": 2, "": 1, "USD": 1}, "revenue": {"EUR": 100, "": 20, "USD": 9},
         "refunded": {"EUR": 30}}
    assert fig.main_currency(m, None) == "EUR"
    s = fig.sales(m, "EUR", 2, 1)
    assert (s["orders"], s["revenue"], s["aov"], s["repeat_rate"], s["other_currencies"]) == \
        (3, 90.0, 30.0, 0.5, {"USD": {"orders": 1, "revenue": 9.0}})
    assert fig.nps({"nps_responses": {"": 4}, "nps_promoters": {"": 3},
                    "nps_detractors": {"": 1}})["score"] == 50.0
    assert fig.retention(4, 1) == {"previous_customers": 4, "retained_customers": 1,
                                   "retention_rate": 0.25, "churn_rate": 0.75}


def test_report_tables_render_an_answer() -> None:
    group = {"sent": 3, "open_rate": 0.5}
    answer = {"window": {"from": "2026-11-01", "to": "2026-11-02", "interval": "day",
                         "timezone": "UTC"},
              "totals": {"communication": group, "sales": {"orders": 2, "revenue": 10.5},
                         "base": None},
              "series": [{"start": "2026-11-01", "communication": group}],
              "by": {"journey": {"welcome": {"communication": {"sent": 3, "unique_clicks": 1},
                                             "attribution": {"orders": 1, "revenue": 10.5}}}}}
    console = Console(width=160, record=True)
    for table in report_tables(answer):
        console.print(table)
    text = console.export_text()
    assert "KPIs 2026-11-01 .. 2026-11-02 (UTC)" in text and "welcome" in text
    assert "open_rate" in text and "10.50" in text


def test_cover_uses_the_fewest_whole_intervals() -> None:
    assert cover(date(2026, 10, 30), date(2026, 12, 2)) == [
        ("day", date(2026, 10, 30)), ("day", date(2026, 10, 31)),
        ("month", date(2026, 11, 1)), ("day", date(2026, 12, 1)), ("day", date(2026, 12, 2))]
    assert cover(date(2026, 11, 2), date(2026, 11, 16)) == [
        ("week", date(2026, 11, 2)), ("week", date(2026, 11, 9)), ("day", date(2026, 11, 16))]
