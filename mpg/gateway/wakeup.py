"""Wake the outbound worker when another program writes to a SQLite database (watchdog).

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
A commit's last WAL write comes a moment before its counter moves, and a busy machine
may hold the writer between the two for tens of milliseconds: a look that found
nothing new is repeated after 10, 20, 40, ... ms, for up to :data:`RECHECK_UNTIL`
seconds after the event. (Waking on every event had the same gap in another form:
the worker woken by the write could look before the commit was visible, and the row
then waited for the next poll.) What remains for the poll to catch: a writer held
longer than that, and a gateway commit that wrote nothing followed, within
microseconds and before the gateway's second read, by another program's commit.
When the counter cannot be read (no ``-shm``: the database is not in WAL mode, or an
unknown wal-index version) every event wakes.

**The kernel filters the events.** The watcher watches the database file and its WAL
themselves for writes, and their folder only for files created or moved into it. A
folder watch for writes gets every write to every file in the folder (another
database's WAL beside this one, a log): each one costs watchdog's threads their Python
work before the name is even looked at, 0.7 ms of CPU per message in each gateway of
``scripts/bench.py``, whose three databases share a folder. SQLite deletes the WAL when
the last connection closes and makes it anew on the next write; the new file shows up
as a creation in the folder, which wakes and moves the file watch to the new file.
"""

from __future__ import annotations

import os
import struct
import threading
from typing import Any, BinaryIO, Final

import sqlalchemy as sa
import structlog
from watchdog.events import (
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import ObservedWatch

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


class _Handler(FileSystemEventHandler):
    """Notes an event on one of ``names``; a creation (or a move into place) also asks
    for the file watches to be made anew (:meth:`DatabaseWatcher._arm`)."""

    def __init__(self, names: frozenset[str], changed: threading.Event) -> None:
        self._names = names
        self._changed = changed
        self.created = threading.Event()
        #: Events that reached the watcher (for tests and the benchmark's curiosity).
        self.events = 0

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.events += 1
        paths = [event.src_path, event.dest_path]
        names = {os.path.basename(os.fsdecode(p)) for p in paths if p}
        if names & self._names:
            if isinstance(event, FileCreatedEvent | FileMovedEvent):
                self.created.set()
            self._changed.set()


class DatabaseWatcher:
    """Sets ``wake`` when a program other than this gateway commits to its SQLite file.

    ``engine`` is the gateway's engine on that file: its commits are the ones ignored.
    ``wakeups`` counts the times the watcher set ``wake``.
    """

    def __init__(self, engine: sa.Engine, wake: threading.Event) -> None:
        database = engine.url.database
        if not watchable(engine.url) or database is None:
            raise ValueError("only a SQLite database file can be watched")
        path = os.path.abspath(database)
        base = os.path.basename(path)
        self._engine = engine
        self._wake = wake
        self._folder = os.path.dirname(path)
        #: The files whose writes are commits: the database (rollback journal mode) and
        #: its WAL. A ``-journal`` is made and removed by each transaction instead.
        self._files = (path, path + "-wal")
        self._changed = threading.Event()
        self._closing = False
        self._counter = CommitCounter(path)
        self._ledger = Ledger(self._counter.read())
        self._handler = _Handler(frozenset({base, base + "-wal", base + "-journal"}), self._changed)
        self._observer = Observer()
        self._file_watches: dict[str, tuple[int, ObservedWatch]] = {}  # path -> (inode, watch)
        self._thread = threading.Thread(target=self._run, name="mpg-dbwatch", daemon=True)
        self.wakeups = 0

    def start(self) -> None:
        """Begin watching (watchdog's threads and one of ours that reads the counter)."""
        sa.event.listen(self._engine, "begin", self._on_begin)
        sa.event.listen(self._engine, "commit", self._on_commit)
        sa.event.listen(self._engine.pool, "checkin", self._on_checkin)
        self._observer.schedule(
            self._handler,
            self._folder,
            recursive=False,
            event_filter=[FileCreatedEvent, FileMovedEvent],
        )
        self._observer.daemon = True
        self._observer.start()
        self._arm()
        self._thread.start()
        log.debug("watching_database", folder=self._folder)

    def close(self) -> None:
        """Release the ``-shm`` file; call after the engine is disposed (CommitCounter)."""
        self._counter.close()

    @property
    def events(self) -> int:
        """File events that reached the watcher so far."""
        return self._handler.events

    def _arm(self) -> None:
        """Watch each of the database's files that exists for writes, the file there now
        (a file made anew replaces the watch of the one it replaced)."""
        for path in self._files:
            try:
                inode = os.stat(path).st_ino
            except OSError:
                inode = None
            known = self._file_watches.get(path)
            if known is not None and known[0] == inode:
                continue
            if known is not None:
                self._observer.unschedule(known[1])
                del self._file_watches[path]
            if inode is not None:
                try:
                    watch = self._observer.schedule(
                        self._handler, path, event_filter=[FileModifiedEvent]
                    )
                except OSError:
                    continue  # gone again meanwhile: its next creation arms it
                self._file_watches[path] = (inode, watch)

    def stop(self) -> None:
        """Stop watching and wait for the watcher threads."""
        if self._observer.is_alive():
            self._observer.stop()
            self._observer.join(timeout=5)
        self._closing = True
        self._changed.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for target, name, listener in (
            (self._engine, "begin", self._on_begin),
            (self._engine, "commit", self._on_commit),
            (self._engine.pool, "checkin", self._on_checkin),
        ):
            if sa.event.contains(target, name, listener):
                sa.event.remove(target, name, listener)

    def _run(self) -> None:
        delay: float | None = None  # None: wait for an event; else the next look's delay
        spent = 0.0
        while True:
            changed = self._changed.wait(delay)
            if self._closing:
                return
            self._changed.clear()
            if self._handler.created.is_set():
                self._handler.created.clear()
                self._arm()
            foreign = self._ledger.external(self._counter.read())
            if foreign:
                self.wakeups += 1
                self._wake.set()
            # An event that showed nothing new may be a commit whose counter has not moved
            # yet: look again after 10, 20, 40, ... ms (see the module doc).
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
