"""Wake the outbound worker when another program writes to a SQLite database.

Polling stays the safety net; a change to the database file or its WAL only makes
pickup immediate instead of waiting out the poll interval. Other databases rely on
LISTEN/NOTIFY or adaptive polling (docs/databases.md).

**The gateway's own writes wake nobody.** Every commit, the gateway's own as much as
the ERP's, writes the WAL and so raises file events; waking on all of them made the
worker run an empty cycle after each of its own transactions. Which commit was whose
is told by SQLite's commit counter: the wal-index header at the start of the ``-shm``
file holds ``iChange``, which every commit that writes anything increments by one,
whichever process makes it (https://www.sqlite.org/walformat.html, "the wal-index
header"). The gateway watches its own commits from the inside (engine events):

- just before the COMMIT of a transaction that changed rows it holds the database's
  write lock, so the counter read then (``n``) is exact and its commit makes it
  ``n + 1``: that value is noted as the gateway's (:meth:`Ledger.claim`);
- right after (the connection's next transaction or its return to the pool) the
  counter is read again: still ``n`` means the commit wrote nothing (an UPDATE to the
  values a row already held), and the note is withdrawn.

A file event then makes the watcher read the counter: it wakes the worker only when
the counter passed a value not noted as the gateway's, i.e. someone else committed.
A commit's first WAL write comes a moment before its counter moves (an ERP whose
SQLite syncs every commit, the default ``synchronous=FULL``, syncs the WAL in between:
0.3 to 1 ms on the benchmark machine), and a busy machine may hold the writer between
the two for tens of milliseconds: a look that found nothing new is repeated after 1,
2, 4, ... ms, for up to :data:`RECHECK_UNTIL` seconds after the event. The first look
(on Linux a millisecond after the event: :data:`mpg.gateway.filewatch.COALESCE_SECONDS`)
often comes too early; when the next came after 10 ms, that wait was 10 of the
12 ms from an ERP's INSERT to its claim at 10 messages/s. (Waking on every event had
the same gap in another form: the worker woken by the write could look before the
commit was visible, and the row then waited for the next poll.) What remains for the
poll to catch: a writer held longer than that, and a gateway commit that wrote nothing
followed, within microseconds and before the gateway's second read, by another
program's commit.
When the counter cannot be read (no ``-shm``: the database is not in WAL mode, or an
unknown wal-index version) every event wakes.

Which files are watched and how: :mod:`mpg.gateway.filewatch` (the database and its
WAL for writes, their folder for their creation; on Linux inotify read by this
watcher's own thread).
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, Final

import sqlalchemy as sa
import structlog

from mpg.gateway import filewatch

log = structlog.get_logger("mpg.wakeup")

#: Seconds after a look that found no new commit before the first look again; each
#: further look waits twice as long, up to :data:`RECHECK_UNTIL` after the event.
RECHECK_FIRST: Final = 0.001
RECHECK_UNTIL: Final = 5.0
#: The wal-index header's first fields: iVersion, 4 unused bytes, iChange (native order).
_SHM_HEADER: Final = struct.Struct("=I4xI")
#: The only wal-index format SQLite has written (iVersion).
WAL_INDEX_VERSION: Final = 3007000
#: iChange is an unsigned 32-bit counter and wraps.
_MODULUS: Final = 1 << 32
# Keys in a pooled connection's info dict.
_CHANGES: Final = "mpg_wakeup_changes"  # sqlite3 total_changes when its transaction began
_CLAIMED: Final = "mpg_wakeup_claimed"  # counter before its last commit, not yet checked


class CommitCounter:
    """Reads the commit counter (``iChange``) of one SQLite database in WAL mode.

    The ``-shm`` file stays open from the first read to :meth:`close`: closing any
    descriptor of a file drops every POSIX lock the process holds on it, and SQLite
    keeps its WAL locks on that file (https://www.sqlite.org/howtocorrupt.html, 2.2).
    """

    def __init__(self, database: str) -> None:
        self._path = database + "-shm"
        self._file: BinaryIO | None = None
        self._lock = threading.Lock()

    def read(self) -> int | None:
        """The counter now, or None when it cannot be read (no WAL, unknown format)."""
        with self._lock:
            try:
                data = self._read_header()
            except OSError:
                return None
        if len(data) < _SHM_HEADER.size:
            return None
        version, change = _SHM_HEADER.unpack(data)
        return int(change) if version == WAL_INDEX_VERSION else None

    def _read_header(self) -> bytes:
        if (
            self._file is not None
            and os.stat(self._path).st_ino != os.fstat(self._file.fileno()).st_ino
        ):
            # Every connection closed and the file was made anew; the old one's locks
            # are nobody's any more.
            self._file.close()
            self._file = None
        if self._file is None:
            self._file = open(self._path, "rb", buffering=0)  # noqa: SIM115 - held open
        self._file.seek(0)
        return self._file.read(_SHM_HEADER.size)

    def close(self) -> None:
        """Close the ``-shm`` file: only once this process has no connection to the
        database left (see the class doc)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class Ledger:
    """Which commit counter values the gateway's own commits made (thread-safe).

    PURE: the counter values come in from the caller.
    """

    def __init__(self, seen: int | None) -> None:
        self._lock = threading.Lock()
        #: Every commit up to this counter value is accounted for (None: unknown).
        self._seen = seen
        self._own: set[int] = set()

    def claim(self, before: int) -> None:
        """The gateway is about to commit with the counter at ``before``."""
        with self._lock:
            self._own.add((before + 1) % _MODULUS)

    def withdraw(self, before: int) -> None:
        """That commit wrote nothing: ``before + 1`` will be someone else's."""
        with self._lock:
            self._own.discard((before + 1) % _MODULUS)

    def external(self, now: int | None) -> bool:
        """Whether a commit not the gateway's happened up to counter value ``now``;
        everything up to ``now`` counts as accounted for afterwards."""
        with self._lock:
            seen, self._seen = self._seen, now
            if now is None or seen is None:
                self._own.clear()
                return True
            ahead = (now - seen) % _MODULUS
            if ahead == 0:
                return False
            if ahead >= _MODULUS // 2:
                # Behind what was seen: the wal-index was rebuilt; start over.
                self._own.clear()
                return True
            # More new commits than claims: some are not the gateway's, no need to look.
            foreign = ahead > len(self._own) or any(
                (seen + k) % _MODULUS not in self._own for k in range(1, ahead + 1)
            )
            # Keep only the claims still ahead of the counter.
            self._own = {v for v in self._own if 0 < (v - now) % _MODULUS < _MODULUS // 2}
            return foreign


class DatabaseWatcher:
    """Sets ``wake`` when a program other than this gateway commits to its SQLite file.

    ``engine`` is the gateway's engine on that file: its commits are the ones ignored.
    ``wakeups`` counts the times the watcher set ``wake``. ``files`` makes the watch of
    the files (the platform's own by default; tests choose).
    """

    def __init__(
        self,
        engine: sa.Engine,
        wake: threading.Event,
        files: Callable[[Sequence[str]], filewatch.FileWatch] = filewatch.watch,
    ) -> None:
        database = engine.url.database
        if not watchable(engine.url) or database is None:
            raise ValueError("only a SQLite database file can be watched")
        path = os.path.abspath(database)
        self._engine = engine
        self._wake = wake
        # The files whose writes are commits: the WAL, and the database itself in
        # rollback journal mode (in WAL mode only checkpoints write it).
        self._paths = (path, path + "-wal")
        self._files = files
        self._watch: filewatch.FileWatch | None = None
        self._closing = False
        self._counter = CommitCounter(path)
        self._ledger = Ledger(self._counter.read())
        self._thread = threading.Thread(target=self._run, name="mpg-dbwatch", daemon=True)
        self.wakeups = 0

    def start(self) -> None:
        """Begin watching (one thread of ours that reads the events and the counter)."""
        sa.event.listen(self._engine, "begin", self._on_begin)
        sa.event.listen(self._engine, "commit", self._on_commit)
        sa.event.listen(self._engine.pool, "checkin", self._on_checkin)
        self._watch = self._files(self._paths)
        self._thread.start()
        log.debug("watching_database", files=self._paths, watch=type(self._watch).__name__)

    def close(self) -> None:
        """Release the ``-shm`` file; call after the engine is disposed (CommitCounter)."""
        self._counter.close()

    @property
    def events(self) -> int:
        """File events that reached the watcher so far (after the kernel's filtering)."""
        return self._watch.events if self._watch is not None else 0

    def stop(self) -> None:
        """Stop watching and wait for the watcher thread."""
        self._closing = True
        if self._watch is not None:
            self._watch.interrupt()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self._watch is not None:
            self._watch.close()
        for target, name, listener in (
            (self._engine, "begin", self._on_begin),
            (self._engine, "commit", self._on_commit),
            (self._engine.pool, "checkin", self._on_checkin),
        ):
            if sa.event.contains(target, name, listener):
                sa.event.remove(target, name, listener)

    def _run(self) -> None:
        assert self._watch is not None  # made by start() before this thread
        delay: float | None = None  # None: wait for an event; else the next look's delay
        spent = 0.0
        while True:
            change = self._watch.wait(delay)
            if self._closing:
                return
            if change.created:
                self._watch.rearm()
            changed = change.written
            foreign = self._ledger.external(self._counter.read())
            if foreign:
                self.wakeups += 1
                self._wake.set()
            # An event that showed nothing new may be a commit whose counter has not moved
            # yet: look again after 1, 2, 4, ... ms (see the module doc).
            if changed:
                delay, spent = (None, 0.0) if foreign else (RECHECK_FIRST, 0.0)
            elif delay is not None:
                spent += delay
                delay = None if foreign or spent >= RECHECK_UNTIL else delay * 2

    # -- the gateway's own commits (engine events, in the committing thread) ----------

    def _on_begin(self, conn: sa.Connection) -> None:
        info = conn.connection.info
        self._check_claim(info)
        info[_CHANGES] = _total_changes(conn)

    def _on_commit(self, conn: sa.Connection) -> None:
        info = conn.connection.info
        if _total_changes(conn) == info.get(_CHANGES):
            return  # nothing changed: the commit writes nothing
        # Rows changed, so this connection holds the write lock: the counter is exact.
        before = self._counter.read()
        if before is not None:
            self._ledger.claim(before)
            info[_CLAIMED] = before

    def _on_checkin(self, _dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            self._check_claim(record.info)

    def _check_claim(self, info: dict[Any, Any]) -> None:
        before = info.pop(_CLAIMED, None)
        if before is not None and self._counter.read() == before:
            self._ledger.withdraw(before)


def _total_changes(conn: sa.Connection) -> int:
    """Rows changed through this SQLite connection since it was opened."""
    return int(conn.connection.dbapi_connection.total_changes)  # type: ignore[union-attr]


def watchable(database_url: str | sa.URL) -> bool:
    """True when ``database_url`` names a SQLite file that can be watched."""
    url = sa.make_url(database_url)
    return url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
