"""`touchpoint journeys stats` shows instances, and distinct customers where they differ."""

from __future__ import annotations

from rich.console import Console

from touchpoint.client import stats_table


def test_stats_table_shows_customers_beside_instances() -> None:
    table = stats_table({"key": "orders", "entries": 3, "customers": 2,
                         "stages": {"bought": {"active": 3, "completed": 1}},
                         "stage_customers": {"bought": {"active": 2, "completed": 1}}})
    console = Console(width=80, record=True)
    console.print(table)
    text = console.export_text()
    assert "orders: 3 entries, 2 customers" in text
    assert "3 (2)" in text and "1 (1)" not in text


def test_stats_table_reads_an_older_answer_without_customer_counts() -> None:
    assert stats_table({"key": "k", "entries": 0, "stages": {}}) == (
        "k: 0 entries, no customer in any stage yet")
