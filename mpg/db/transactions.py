"""Transactions, driver-error mapping and the one "worth retrying?" check.

Every database call of the gateway and the server goes through :func:`begin` or
:func:`connect`, so SQLAlchemy and driver errors leave only as
:class:`mpg.errors.StorageError` naming what was being done (the original as
``__cause__``). Whether such a failure is worth trying again is asked here and
nowhere else: :func:`is_transient` (locked, busy, connection lost, deadlock: the
gateway's workers retry with backoff) and :func:`lost_race` (a concurrent
transaction won: the server runs the whole transaction again at once,
:func:`retrying`).

On SQLite, :func:`begin` starts with ``BEGIN IMMEDIATE`` and :func:`connect` with a
plain ``BEGIN`` (see :mod:`mpg.db.engine`). The write transactions of one process on
one SQLite file also take turns at an in-process lock first (:func:`_writer`): SQLite
has one write lock per file, and a thread that meets it taken inside SQLite waits in
its busy handler, which sleeps 1, 2, 5, 10, ... ms between looks, so a lock held for
1.1 ms cost the next writer 3 ms, one held 3.1 ms cost 8 ms. Waiting at a
``threading.Lock`` instead, the next writer starts the moment the last one is done.
Writers in other processes (the ERP, another server process) are waited for at
``BEGIN IMMEDIATE`` (:mod:`mpg.db.engine`: short looks, then SQLite's busy handler).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final, TypeVar

import sqlalchemy as sa
import structlog

from mpg import errors, metrics
from mpg.db import bulk
from mpg.db import engine as engines

log = structlog.get_logger(__name__)

_T = TypeVar("_T")

#: Attempts :func:`retrying` makes before giving up.
ATTEMPTS: Final = 5

#: Lower-cased fragments of driver messages that mean "try again later".
_TRANSIENT_MARKERS: Final = (
    "database is locked",
    "database table is locked",
    "database is busy",
    "deadlock",
    "lock wait timeout",
    "lock request time out",
    "could not serialize",
    "server has gone away",
    "lost connection",
    "connection refused",
    "connection reset",
    "connection timed out",
    "could not connect",
    "communication link failure",
    "server closed the connection",
    "terminating connection",
    "login timeout",
    "timeout expired",
)


def is_transient(exc: BaseException) -> bool:
    """Whether a storage failure is worth retrying (locked, busy, connection lost).

    Accepts a :class:`~mpg.errors.StorageError` raised here (its cause is examined)
    or a SQLAlchemy/driver exception.
    """
    cause: BaseException | None = exc
    if isinstance(exc, errors.StorageError) and exc.__cause__ is not None:
        cause = exc.__cause__
    if isinstance(cause, sa.exc.DisconnectionError | sa.exc.TimeoutError):
        return True
    if isinstance(cause, sa.exc.DBAPIError):
        if cause.connection_invalidated:
            return True
        text = str(cause.orig).lower()
        return any(marker in text for marker in _TRANSIENT_MARKERS)
    return False


#: SQLSTATEs (PostgreSQL) and error numbers (MariaDB) of a transaction that lost a race
#: to another one and may simply run again: serialization failure, deadlock, lock wait.
_RACE_SQLSTATES: Final = frozenset({"40001", "40P01"})
_RACE_MYSQL_ERRORS: Final = frozenset({1213, 1205})


def lost_race(exc: BaseException) -> bool:
    """Whether a transaction failed because a concurrent one won (run it again).

    A unique violation counts: two processes inserting the same key (an idempotent
    submit of one TxMessageId) must not both succeed, and the loser, run again, finds
    the winner's row. Deadlocks and serialization failures are the database asking
    for a retry. Accepts what :func:`is_transient` accepts.
    """
    cause = exc.__cause__ if isinstance(exc, errors.StorageError) else exc
    if isinstance(cause, sa.exc.IntegrityError):
        return True
    if not isinstance(cause, sa.exc.DBAPIError):
        return False
    orig: Any = cause.orig
    if getattr(orig, "sqlstate", None) in _RACE_SQLSTATES:
        return True
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
    return bool(args) and args[0] in _RACE_MYSQL_ERRORS


def _describe(exc: sa.exc.SQLAlchemyError) -> str:
    """The driver's own words (e.g. "database is locked"), without SQL or parameters."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        text = str(exc.orig)
    else:
        text = str(exc)
    lines = text.strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@contextlib.contextmanager
def mapped_errors(what: str) -> Iterator[None]:
    """Turn SQLAlchemy and driver errors raised inside into StorageError naming ``what``."""
    try:
        yield
    except sa.exc.SQLAlchemyError as exc:
        metrics.DATABASE_ERRORS.inc()
        raise errors.StorageError(f"{what} failed: {_describe(exc)}") from exc


#: The in-process write lock of each SQLite file (by absolute path), made on first use.
_WRITERS: dict[str, threading.RLock] = {}
_WRITERS_LOCK: Final = threading.Lock()


@contextlib.contextmanager
def _writer(engine: sa.Engine) -> Iterator[None]:
    """Hold this process's write lock of ``engine``'s SQLite file (nothing elsewhere).

    Reentrant, so a thread that nests write transactions fails as it did without the
    lock (SQLite's "database is locked" after the busy timeout) instead of hanging.
    Waiting longer than the busy timeout fails with the same error as SQLite's own.
    """
    database = engine.url.database
    if engine.dialect.name != "sqlite" or database in (None, "", ":memory:"):
        yield
        return
    path = os.path.abspath(database)
    with _WRITERS_LOCK:
        lock = _WRITERS.setdefault(path, threading.RLock())
    if not lock.acquire(timeout=engines.SQLITE_BUSY_TIMEOUT_MS / 1000):
        raise sa.exc.OperationalError(
            "BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked")
        )
    try:
        yield
    finally:
        lock.release()


class Rider:
    """A write that must commit together with the caller's next write transaction.

    :func:`begin` given a rider runs ``write`` first in the transaction, and once that
    transaction has committed the rider is done: later transactions (a retry after a
    lost race does not count, it rolled back) leave it out. A request's own record
    (the server's nonce) so costs a statement instead of a transaction of its own, and
    stands or falls with what the request changed.
    """

    __slots__ = ("_write", "done")

    def __init__(self, write: Callable[[sa.Connection], None]) -> None:
        self._write = write
        self.done = False

    def ride(self, conn: sa.Connection) -> None:
        """Run the write in ``conn``'s transaction unless it has committed before."""
        if not self.done:
            self._write(conn)


@contextlib.contextmanager
def begin(engine: sa.Engine, what: str, rider: Rider | None = None) -> Iterator[sa.Connection]:
    """One write transaction: committed on success, rolled back on any error.

    On SQLite it starts with ``BEGIN IMMEDIATE``, after this process's other writers
    to the same file are done (see the module docstring). ``rider``: a write that
    comes first and commits with this transaction (:class:`Rider`).
    """
    # The connection first, as before: a thread holding the lock never waits for the pool.
    with mapped_errors(what), engine.connect() as conn, _writer(engine):
        conn = conn.execution_options(**{engines.WRITE_OPTION: True})
        with conn.begin():
            if rider is not None:
                rider.ride(conn)
            yield conn
    if rider is not None:
        rider.done = True


@contextlib.contextmanager
def connect(engine: sa.Engine, what: str) -> Iterator[sa.Connection]:
    """A connection for reads (one consistent snapshot; rolled back at the end)."""
    with mapped_errors(what), engine.connect() as conn:
        yield conn


def worth_locking(
    engine: sa.Engine, query: sa.Select[Any], params: Mapping[str, Any], what: str
) -> bool:
    """Whether a write transaction about to work on what ``query`` finds should start.

    On SQLite the write lock is the whole database's: every other writer (requests,
    an ERP's INSERTs) waits while it is held, so a periodic job first reads, without
    it, whether ``query`` finds a row at all. Elsewhere True: row locks cost nobody
    else anything, and the read would only add a round trip.
    """
    if engine.dialect.name != "sqlite":
        return True
    with connect(engine, what) as conn:
        return conn.execute(query.limit(1), params).first() is not None


def compare_and_set(
    conn: sa.Connection, statement: sa.Update, params: Sequence[dict[str, Any]]
) -> list[int]:
    """Run a guarded UPDATE for many rows; return the indexes of ``params`` that matched.

    ``statement`` must change at most one row per parameter set (a key plus
    ``State = :expected``). The fast path is one executemany whose total row count
    proves every row moved; when some row changed under us (e.g. the ERP voided it)
    the batch is undone to a savepoint and replayed row by row to learn which ones.
    """
    if not params:
        return []
    if conn.dialect.supports_sane_multi_rowcount:
        savepoint = conn.begin_nested()
        if bulk.update_many(conn, statement, params) == len(params):
            savepoint.commit()
            return list(range(len(params)))
        savepoint.rollback()
    return [i for i, p in enumerate(params) if conn.execute(statement, p).rowcount == 1]


def retrying(operation: Callable[[], _T]) -> _T:
    """Run ``operation`` (one whole transaction) again while it loses a race.

    Several server processes share one database; each operation is written so that
    running it again after a lost race gives the answer it would have given alone.
    """
    attempt = 1
    while True:
        try:
            return operation()
        except errors.StorageError as exc:
            if attempt >= ATTEMPTS or not lost_race(exc):
                raise
            log.info("transaction_retried", attempt=attempt, error=str(exc.__cause__)[:200])
            attempt += 1


def chunks(values: Sequence[Any], size: int = 500) -> Iterator[Sequence[Any]]:
    """Slices of ``values`` small enough for one ``IN (...)`` on every database."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def update_returning(
    conn: sa.Connection,
    keys: Sequence[Any],
    params: dict[str, Any],
    *,
    returning: sa.UpdateBase,
    lock: sa.Select[Any],
    update: sa.Update,
) -> list[sa.Row[Any]]:
    """Run an UPDATE of the rows keyed ``keys`` (bound as ``b_ids``, in
    :func:`chunks`; ``params`` besides) and return the rows it changed.

    ``returning`` (the UPDATE … RETURNING) where the database has it (SQLite,
    PostgreSQL, SQL Server): one statement. Elsewhere ``lock`` reads the rows the
    update will change ``FOR UPDATE`` (in key order, so two such updates cannot
    deadlock), then ``update`` changes them.
    """
    changed: list[sa.Row[Any]] = []
    for part in chunks(keys):
        bound = {**params, "b_ids": part}
        if conn.dialect.update_returning:
            changed.extend(conn.execute(returning, bound))
            continue
        locked = conn.execute(lock, bound).all()
        if locked:
            conn.execute(update, bound)
        changed.extend(locked)
    return changed


#: Longest the probe waits for a SQLite write lock before calling the database busy.
PROBE_LOCK_TIMEOUT_MS: Final = 500


def probe_writable(engine: sa.Engine) -> None:
    """Raise :class:`~mpg.errors.StorageError` unless the database can take a write now.

    On SQLite a ``BEGIN IMMEDIATE`` (rolled back at once) is what proves it: in WAL
    mode reads succeed even while another process holds the file locked, but the
    gateway and the server must write to make progress. It is issued on the driver's
    cursor with a short busy timeout, so that a readiness probe answers within half a
    second instead of the five a transaction would wait. Elsewhere ``SELECT 1``.
    """
    try:
        with engine.connect() as conn:
            if engine.dialect.name != "sqlite":
                conn.exec_driver_sql("SELECT 1")
                return
            raw = conn.connection.dbapi_connection
            assert raw is not None  # a checked-out connection always has one
            cursor = raw.cursor()
            try:
                previous = cursor.execute("PRAGMA busy_timeout").fetchone()[0]
                cursor.execute(f"PRAGMA busy_timeout={PROBE_LOCK_TIMEOUT_MS}")
                try:
                    cursor.execute("BEGIN IMMEDIATE")
                    cursor.execute("ROLLBACK")
                finally:
                    cursor.execute(f"PRAGMA busy_timeout={int(previous)}")
            finally:
                cursor.close()
    except Exception as exc:  # SQLAlchemy's errors and the raw driver's (sqlite3.Error)
        metrics.DATABASE_ERRORS.inc()
        raise errors.StorageError(f"database not writable: {exc}") from exc
