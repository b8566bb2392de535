"""PostgreSQL's planner statistics kept up with tables that grow in a burst.

PostgreSQL plans each statement from statistics that ``ANALYZE`` takes, and its
autovacuum daemon takes them once a table changed by a tenth, looking every minute. A
queue that grows from a few rows to tens of thousands in seconds (a new database's
first burst, a backlog after an outage) is then planned as the small table it was: a
statement that changes 500 entries by key scanned the whole table instead, on every
call, so each batch cost more than the one before (docs/benchmarks.md, "The planner
and the key lists").

A long-running MPG process (``mpg server``, ``mpg run``) on PostgreSQL therefore runs an
:class:`Analyzer`: every :data:`INTERVAL` seconds it compares each of MPG's own tables'
live rows (``pg_stat_user_tables``) with the rows its plans assume (``pg_class``, as the
last ``ANALYZE`` or ``VACUUM`` left them), one cheap query, and analyses those past
:func:`due`'s line, from a connection of its own: a table the planner believes is half
its size or less. Updates alone (a queue entry leased, then acknowledged) do not count:
they leave the size the planner assumes right, and retaking a busy queue's statistics
after every few thousand updates cost a quarter of PostgreSQL's work in a burst.
``ANALYZE`` reads a small sample (:data:`SAMPLE_TARGET`), of the columns statements
filter on only (:data:`_PLANNED`), and blocks no reader or writer. The other
databases keep their statistics up by themselves: MariaDB's InnoDB recalculates a
table's after a tenth changed, SQL Server before the next plan after its own
threshold, and SQLite plans without them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import sqlalchemy as sa
import structlog

from mpg.db import periodic

log = structlog.get_logger("mpg.db")

#: Seconds between the analyzer's looks.
INTERVAL: Final = 1.0
#: Rows below which a table is left alone (to autovacuum), however it grew.
MIN_ROWS: Final = 1000
#: How many times the rows its plans assume a table must hold to be analysed again.
GROWTH: Final = 2.0
#: The statistics target of the analyser's ``ANALYZE`` (PostgreSQL's default: 100): a
#: sample of 300 times this many rows, ten values kept per column. MPG's statements go
#: by key or by recipient and state, so a plan needs the table's size, how many distinct
#: keys and which few states: a tenth of the default sample shows them, and costs about
#: a tenth (docs/benchmarks.md, "2026-12-02 (2)"). Autovacuum's own analyses keep
#: taking the full statistics later.
SAMPLE_TARGET: Final = 10

#: The named tables of the current schema that this login may analyse (their owner's
#: or the database owner's role; a superuser has every role), with their live rows and
#: the rows their plans assume (-1: never analysed). An ERP's table the gateway only
#: writes to is left to autovacuum rather than refused every second.
_LOOK: Final = sa.text(
    "SELECT s.relname, s.n_live_tup, c.reltuples"
    " FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
    " WHERE s.schemaname = current_schema() AND s.relname = ANY(:names)"
    " AND (pg_has_role(c.relowner, 'USAGE') OR pg_has_role("
    "(SELECT datdba FROM pg_database WHERE datname = current_database()), 'USAGE'))"
)


#: The columns of a table whose statistics the planner uses for MPG's statements: all
#: but the ``bytea`` and ``text`` ones. Those hold payloads (sealed values, message
#: contents, answers) that no statement filters or joins on, and they were most of what
#: an ``ANALYZE`` of a queue cost: each sampled value read, often out of line, to
#: measure it.
_PLANNED: Final = sa.text(
    "SELECT attname FROM pg_attribute"
    " WHERE attrelid = CAST(:name AS regclass) AND attnum > 0 AND NOT attisdropped"
    " AND atttypid NOT IN ('bytea'::regtype, 'text'::regtype) ORDER BY attnum"
)


def _quoted(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def due(rows: int, planned: float) -> bool:
    """Whether a table of about ``rows`` live rows, planned as holding ``planned`` (-1:
    never analysed), should be analysed now: at least :data:`MIN_ROWS` rows and
    :data:`GROWTH` times what the planner assumes."""
    return rows >= max(MIN_ROWS, GROWTH * planned)


class Analyzer(periodic.Periodic):
    """Analyses MPG's PostgreSQL tables as they change; see the module docstring."""

    def __init__(
        self, engine: sa.Engine, tables: Sequence[str], interval: float = INTERVAL
    ) -> None:
        super().__init__("mpg-analyze", interval)
        self._engine = engine
        self._tables = sorted(tables)
        self._failing = False

    def look(self) -> list[str]:
        """Analyse the tables that are :func:`due`; return their names.

        A failure is logged once (and again after it recovered) and never stops the
        thread: autovacuum still analyses the tables, only later.
        """
        try:
            with self._engine.connect() as conn:
                found = conn.execute(_LOOK, {"names": self._tables}).all()
                conn.commit()
                stale = [name for name, rows, planned in found if due(rows, planned)]
                for name in stale:
                    # One short transaction per table: its lock is held no longer, and
                    # the target set for it ends with it.
                    columns = conn.execute(_PLANNED, {"name": _quoted(name)}).scalars().all()
                    listed = ", ".join(_quoted(column) for column in columns)
                    conn.exec_driver_sql(f"SET LOCAL default_statistics_target = {SAMPLE_TARGET}")
                    conn.exec_driver_sql(
                        f"ANALYZE {_quoted(name)}" + (f" ({listed})" if listed else "")
                    )
                    conn.commit()
        except sa.exc.SQLAlchemyError as exc:
            if not self._failing:
                log.warning("analyze_failed", error=str(exc), effect="retried next look")
            self._failing = True
            return []
        if self._failing:
            log.info("analyze_recovered")
            self._failing = False
        if stale:
            log.debug("tables_analyzed", tables=stale)
        return stale


def start(engine: sa.Engine, tables: Sequence[str]) -> Analyzer | None:
    """A running analyzer of ``tables`` if ``engine`` is PostgreSQL, else None; what a
    long-running program calls once, and :meth:`Analyzer.stop` at its end."""
    if engine.dialect.name != "postgresql":
        return None
    analyzer = Analyzer(engine, tables)
    analyzer.start()
    return analyzer
