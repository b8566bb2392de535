"""When PostgreSQL's planner statistics of a table are retaken (mpg.db.statistics.due)."""

from __future__ import annotations

from mpg.db import statistics


def test_a_small_table_is_never_due_and_one_never_analysed_is_due_once_it_is_not() -> None:
    assert not statistics.due(rows=statistics.MIN_ROWS - 1, planned=-1)
    assert statistics.due(rows=statistics.MIN_ROWS, planned=-1)
    assert statistics.due(rows=statistics.MIN_ROWS, planned=0)


def test_a_table_is_due_once_it_holds_twice_the_rows_its_plans_assume() -> None:
    planned = 100_000
    assert not statistics.due(rows=int(planned * statistics.GROWTH) - 1, planned=planned)
    assert statistics.due(rows=int(planned * statistics.GROWTH), planned=planned)


def test_a_table_that_shrank_is_left_to_autovacuum() -> None:
    assert not statistics.due(rows=5_000, planned=100_000)
