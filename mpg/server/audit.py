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


def _like(
    column: sa.ColumnElement[str], text: str, *, prefix: bool = False
) -> sa.ColumnElement[bool]:
    # LIKE with its wildcards escaped (SQL Server's [ too), so the text is matched as
    # written; "!" rather than a backslash, which MariaDB's string literals treat apart.
    escaped = "".join("!" + ch if ch in "!%_[" else ch for ch in text)
    pattern = escaped + "%" if prefix else "%" + escaped + "%"
    return column.like(pattern, escape="!")


def entries(
    engine: sa.Engine,
    *,
    before: int | None = None,
    limit: int = 100,
    actor: str = "",
    action: str = "",
    target: str = "",
) -> list[Entry]:
    """The newest entries first; ``before`` (an entry id) pages back.

    ``actor`` and ``target`` keep entries whose actor / target contains the text,
    ``action`` those whose action starts with it (``group.`` for every group change).
    """
    c = tables.audit_log.c
    query = sa.select(tables.audit_log).order_by(c.Id.desc()).limit(limit)
    if before is not None:
        query = query.where(c.Id < before)
    if actor:
        query = query.where(_like(c.Actor, actor))
    if action:
        query = query.where(_like(c.Action, action, prefix=True))
    if target:
        query = query.where(_like(c.Target, target))
    with transactions.connect(engine, "reading the audit log") as conn:
        rows = conn.execute(query).all()
    return [Entry(r.Id, r.At, r.Actor, r.Action, r.Target, r.Detail) for r in rows]
