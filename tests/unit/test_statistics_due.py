"""When PostgreSQL's planner statistics of a table are retaken (mpg.db.statistics.due)."""

from __future__ import annotations

from mpg.db import statistics


def test_a_few_changes_never_make_a_table_due_however_small_it_is() -> None:
    assert not statistics.due(rows=0, changed=statistics.MIN_CHANGES - 1)
    assert statistics.due(rows=0, changed=statistics.MIN_CHANGES)


def test_a_large_table_is_due_once_a_quarter_of_its_rows_changed() -> None:
    rows = 100_000
    assert not statistics.due(rows=rows, changed=int(rows * statistics.SHARE) - 1)
    assert statistics.due(rows=rows, changed=int(rows * statistics.SHARE))
