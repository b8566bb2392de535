"""The audit log: every admin change, who made it, what and when.

:func:`record` is called inside the transaction that makes the change, so a change
and its audit entry are committed together or not at all. Entries name things by id
(a group id, a code's id, a device's account), never by personal data: the log is
kept longer than the data it speaks of.
"""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from mpg import timefmt
from mpg.db import transactions
from mpg.server import tables

#: Longest detail kept (the column's width).
MAX_DETAIL: int = 2000


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One audit log entry."""

    id: int
    at: str
    actor: str
    action: str
    target: str
    detail: str


def record(conn: sa.Connection, actor: str, action: str, target: str, detail: str = "") -> None:
    """Add an entry in the caller's transaction (``action`` like ``group.create``)."""
    conn.execute(
        tables.audit_log.insert().values(
            At=timefmt.now_text("utc"),
            Actor=actor[:100],
            Action=action[:50],
            Target=target[:300],
            Detail=detail[:MAX_DETAIL],
        )
    )


def entries(engine: sa.Engine, *, before: int | None = None, limit: int = 100) -> list[Entry]:
    """The newest entries first; ``before`` (an entry id) pages back."""
    c = tables.audit_log.c
    query = sa.select(tables.audit_log).order_by(c.Id.desc()).limit(limit)
    if before is not None:
        query = query.where(c.Id < before)
    with transactions.connect(engine, "reading the audit log") as conn:
        rows = conn.execute(query).all()
    return [Entry(r.Id, r.At, r.Actor, r.Action, r.Target, r.Detail) for r in rows]
