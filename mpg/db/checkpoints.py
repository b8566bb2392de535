"""SQLite's WAL checkpoints in a thread of their own, off the path of every request.

In WAL mode a commit appends the pages it changed to the ``-wal`` file; a checkpoint
copies them back into the database file and syncs both. Left to SQLite, the commit
that takes the log past ``wal_autocheckpoint`` pages (1,000 by default) runs the
checkpoint itself: one request in every few dozen then waits for it, holding the write
lock, and a busy log copies the same hot pages (indexes, the tables' right edges)
again at every checkpoint.

A long-running MPG process (``mpg server``, ``mpg run``) instead runs a
:class:`Checkpointer`: every :data:`INTERVAL` seconds, when anything was committed
since its last look (``PRAGMA data_version``), it runs a ``PASSIVE`` checkpoint on a
connection of its own. ``PASSIVE`` waits for no reader or writer: it copies what no
reader still needs, and the next look copies the rest. SQLite releases the GIL while
it copies, so the work runs beside the requests instead of inside one of them.

Every connection MPG opens keeps an automatic checkpoint as a safety net, at
:data:`SAFETY_PAGES` (about 40 MiB of log with 4 KiB pages): it only fires when no
checkpointer runs (a CLI command) or it falls behind. Other programs' connections to
the same file (an ERP's) keep their own setting.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final

import sqlalchemy as sa
import structlog

from mpg.db import periodic

log = structlog.get_logger("mpg.db")

#: Seconds between the checkpointer's looks. Each look copies the pages changed since
#: the last one, so a shorter interval copies the hot ones more often: 0.25 s cost a
#: burst 10 % of its rate against 1 s, and 2 s gained nothing more (docs/benchmarks.md).
INTERVAL: Final = 1.0
#: WAL pages after which a committing MPG connection checkpoints on its own.
SAFETY_PAGES: Final = 10_000
#: How long the checkpointer's connection waits for a lock (ms); ``PASSIVE`` takes none
#: for long, so this only covers opening the connection during another's recovery.
_BUSY_TIMEOUT_MS: Final = 5000


class Checkpointer(periodic.Periodic):
    """Checkpoints one SQLite database's WAL from a thread; see the module docstring."""

    def __init__(self, engine: sa.Engine, interval: float = INTERVAL) -> None:
        super().__init__("mpg-checkpoint", interval)
        self._engine = engine
        self._conn: sqlite3.Connection | None = None
        self._seen: int | None = None  # data_version at the last look
        self._failing = False

    def finish(self) -> None:
        """A last checkpoint, then the connection closed."""
        try:
            self.look()
        finally:
            self._close()

    def look(self) -> bool:
        """Checkpoint if anything was committed since the last look; whether it did.

        A failure is logged once (and again after it recovered) and never stops the
        thread: the connections' own safety net still bounds the log meanwhile.
        """
        try:
            conn = self._connection()
            version = int(conn.execute("PRAGMA data_version").fetchone()[0])
            if version == self._seen:
                return False
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self._seen = version
        except sqlite3.Error as exc:
            if not self._failing:
                log.warning("checkpoint_failed", error=str(exc), effect="retried next look")
            self._failing = True
            self._close()
            return False
        if self._failing:
            log.info("checkpoint_recovered")
            self._failing = False
        return True

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            args, kwargs = self._engine.dialect.create_connect_args(self._engine.url)
            # The engine's own file name and options (a file: URI included).
            connect: Any = sqlite3.connect
            self._conn = connect(*args, **{**kwargs, "isolation_level": None})
            self._conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            self._seen = None


def wanted(engine: sa.Engine) -> bool:
    """Whether ``engine`` is a SQLite database in a file (the others need none)."""
    return engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:")


def start(engine: sa.Engine) -> Checkpointer | None:
    """A running checkpointer for ``engine`` if it wants one (:func:`wanted`), else None;
    what a long-running program calls once, and :meth:`Checkpointer.stop` at its end."""
    if not wanted(engine):
        return None
    checkpointer = Checkpointer(engine)
    checkpointer.start()
    return checkpointer
