"""Statement shapes that keep every database's planner on the intended index.

A statement that picks rows by key (``EntryId IN (…)``) and also checks other columns
of those rows (``Recipient = :a AND State = 'leased'``) gives the planner a choice: look
each key up, or scan an index over the other columns and test every row found there
against the key list. Without statistics (a new database, a table that grew faster
than they were taken) both SQLite and PostgreSQL took the second, whose cost grows with
the rows behind the other columns. On PostgreSQL an acknowledgement of 500 entries
scanned all the recipient's leased entries (18–22 ms a statement) and a submit's look
for earlier answers all the sender's messages (144 ms at 20,000): PostgreSQL's own CPU
for a 20,000-message run fell from 7.7 to 3.2 s once both went by key
(docs/benchmarks.md, "The planner and the key lists").
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa


def row_check(*conditions: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
    """``conditions`` as one test of each row already found, which no index can serve.

    ``CASE WHEN … THEN 1 ELSE 0 END = 1``: a planner uses an index for a column
    compared with a value, never for a CASE expression, so the rows are found by the
    statement's other (key) conditions and this one only filters them. Same result as
    ``AND``-ing the conditions, on every database MPG supports.
    """
    one: sa.ColumnElement[Any] = sa.literal_column("1")
    zero: sa.ColumnElement[Any] = sa.literal_column("0")
    test: sa.ColumnElement[Any] = sa.case((sa.and_(*conditions), one), else_=zero)
    return test == one
