"""PostgreSQL's planner statistics kept up with tables that grow in a burst.

PostgreSQL plans each statement from statistics that ``ANALYZE`` takes, and its
autovacuum daemon takes them once a table changed by a tenth, looking every minute. A
queue that grows from a few rows to tens of thousands in seconds (a new database's
first burst, a backlog after an outage) is then planned as the small table it was: a
statement that changes 500 entries by key scanned the whole table instead, on every
call, so each batch cost more than the one before (docs/benchmarks.md, "The planner
and the key lists").

A long-running MPG process (``mpg server``, ``mpg run``) on PostgreSQL therefore runs an
:class:`Analyzer`: every :data:`INTERVAL` seconds it reads how much each of MPG's own
tables changed since its last analysis (``pg_stat_user_tables``, one cheap query) and
analyses those past :func:`due`'s line, from a connection of its own. ``ANALYZE`` reads
a sample and blocks no reader or writer. The other databases keep their statistics up
by themselves: MariaDB's InnoDB recalculates a table's after a tenth changed, SQL
Server before the next plan after its own threshold, and SQLite plans without them.
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
#: Changes (rows inserted, updated or deleted) below which a table is left alone.
MIN_CHANGES: Final = 1000
#: Changes, as a share of the table's rows, that make its statistics worth retaking.
SHARE: Final = 0.25

#: The named tables of the current schema that this login may analyse (their owner's
#: or the database owner's role; a superuser has every role), with their row counts and
#: changes since their last analysis. An ERP's table the gateway only writes to is left
#: to autovacuum rather than refused every second.
_LOOK: Final = sa.text(
    "SELECT s.relname, s.n_live_tup, s.n_mod_since_analyze"
    " FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
    " WHERE s.schemaname = current_schema() AND s.relname = ANY(:names)"
    " AND (pg_has_role(c.relowner, 'USAGE') OR pg_has_role("
    "(SELECT datdba FROM pg_database WHERE datname = current_database()), 'USAGE'))"
)


def due(rows: int, changed: int) -> bool:
    """Whether a table of about ``rows`` rows, ``changed`` rows changed since it was
    last analysed, should be analysed now: at least :data:`MIN_CHANGES` changes and
    :data:`SHARE` of its rows (autovacuum's rule, with a lower share)."""
    return changed >= max(MIN_CHANGES, SHARE * rows)


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
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                found = conn.execute(_LOOK, {"names": self._tables}).all()
                stale = [name for name, rows, changed in found if due(rows, changed)]
                for name in stale:
                    conn.exec_driver_sql(f'ANALYZE "{name}"')
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
