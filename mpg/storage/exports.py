"""Where each folder writer stands in the transition history (``MpgExport``).

The folder writers (inbound message files, receipt files) follow ``MpgTransition``
by its ``Id``, like ``mpg tail``. A writer writes the files of the rows after its
position and only then moves the position on, so a crash in between writes those
files again under the same names (harmless) and never skips one.
"""

from __future__ import annotations

import sqlalchemy as sa

from mpg import timefmt
from mpg.db import transactions
from mpg.storage import history, tables

_e = tables.export.c


def position(engine: sa.Engine, name: str) -> int:
    """The history Id up to which ``name`` has written its files.

    A writer seen for the first time starts at the newest history row: it writes
    what happens from now on, not the whole past.
    """
    query = sa.select(_e.LastId).where(_e.Name == name)
    # The common case reads only: no write lock for a writer that has nothing to do.
    with transactions.connect(engine, "reading a folder writer's position") as conn:
        found = conn.execute(query).scalar()
    if found is not None:
        return int(found)
    with transactions.begin(engine, "starting a folder writer") as conn:
        found = conn.execute(query).scalar()
        if found is not None:
            return int(found)
        latest = conn.execute(sa.select(sa.func.max(tables.transition.c.Id))).scalar()
        start = int(latest or 0)
        conn.execute(
            tables.export.insert(), {"Name": name, "LastId": start, "At": timefmt.utc_stamp()}
        )
        return start


def advance(engine: sa.Engine, name: str, last_id: int) -> None:
    """Record that ``name`` has written the files of every history row up to ``last_id``."""
    statement = (
        sa.update(tables.export)
        .where(_e.Name == name, _e.LastId < last_id)
        .values(LastId=last_id, At=timefmt.utc_stamp())
    )
    with transactions.begin(engine, "moving a folder writer's position") as conn:
        conn.execute(statement)


def pending(engine: sa.Engine, name: str, limit: int) -> list[history.Transition]:
    """The history rows after ``name``'s position, oldest first."""
    return history.follow(engine, position(engine, name), limit=limit)
