"""Engines, transactions, driver-error mapping and table creation.

Every database call of the gateway goes through :func:`begin` or :func:`connect`, so
SQLAlchemy and driver errors leave this package only as
:class:`mpg.errors.StorageError` (with the original as ``__cause__``);
:func:`is_transient` tells a locked or lost database (worth retrying) from a
permanent failure (wrong schema, constraint violation).

SQLite runs in WAL mode so the ERP can read while the gateway writes. pysqlite's own
transaction handling is switched off and ``BEGIN`` is emitted here instead: write
transactions use ``BEGIN IMMEDIATE`` so a compare-and-set batch holds the write lock
from its first statement (no ``SQLITE_BUSY`` on lock upgrade, which ``busy_timeout``
cannot wait out), and savepoints work.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from typing import Any, Final

import sqlalchemy as sa

from mpg import errors, metrics
from mpg.storage import hints, schema, tables

#: How long SQLite waits for a lock before answering "database is locked" (ms).
SQLITE_BUSY_TIMEOUT_MS: Final = 5000

#: Execution option marking a connection whose transactions will write.
_WRITE_OPTION: Final = "mpg_write"

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


def attribute_name(column_name: str) -> str:
    """The snake_case attribute for a column: ``TxMessageId`` -> ``tx_message_id``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", column_name).lower()


def create_engine(url: str) -> sa.Engine:
    """An engine for ``url`` (see docs/databases.md for the URL of each database).

    SQLite gets WAL, synchronous=NORMAL and a busy timeout; MariaDB/MySQL connections
    speak utf8mb4 unless the URL says otherwise (the driver's default, utf8mb3 or
    latin1, cannot carry every Chinese character). A URL naming a driver that is not
    installed is a :class:`~mpg.errors.ConfigError` naming the fix (:mod:`mpg.storage.hints`).
    """
    try:
        url_obj = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise errors.ConfigError(f"database_url: {exc}") from exc
    backend = url_obj.get_backend_name()
    if backend in ("mysql", "mariadb") and "charset" not in url_obj.query:
        url_obj = url_obj.update_query_dict({"charset": "utf8mb4"})
    if backend != "sqlite":
        try:
            return sa.create_engine(url_obj, pool_pre_ping=True)
        except (ImportError, sa.exc.NoSuchModuleError) as exc:
            raise errors.ConfigError(
                hints.driver_problem("database_url", url_obj.drivername, exc)
            ) from exc
    engine = sa.create_engine(url_obj)
    sa.event.listen(engine, "connect", _sqlite_on_connect)
    sa.event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Autocommit at the driver level: _sqlite_on_begin decides how a transaction starts.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: sa.Connection) -> None:
    immediate = conn.get_execution_options().get(_WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


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
    except (sa.exc.DBAPIError, sa.exc.DisconnectionError, sa.exc.TimeoutError) as exc:
        metrics.DATABASE_ERRORS.inc()
        raise errors.StorageError(f"{what} failed: {_describe(exc)}") from exc


@contextlib.contextmanager
def begin(engine: sa.Engine, what: str) -> Iterator[sa.Connection]:
    """One write transaction: committed on success, rolled back on any error.

    On SQLite it starts with ``BEGIN IMMEDIATE`` (see the module docstring).
    """
    with mapped_errors(what), engine.connect() as conn:
        conn = conn.execution_options(**{_WRITE_OPTION: True})
        with conn.begin():
            yield conn


@contextlib.contextmanager
def connect(engine: sa.Engine, what: str) -> Iterator[sa.Connection]:
    """A connection for reads (one consistent snapshot; rolled back at the end)."""
    with mapped_errors(what), engine.connect() as conn:
        yield conn


class Database:
    """An engine plus the error-mapping transactions, for callers outside storage."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    @classmethod
    def from_url(cls, url: str) -> Database:
        """A Database on :func:`create_engine` ``(url)``."""
        return cls(create_engine(url))

    def begin(
        self, what: str = "database write"
    ) -> contextlib.AbstractContextManager[sa.Connection]:
        """See :func:`begin`."""
        return begin(self.engine, what)

    def connect(
        self, what: str = "database read"
    ) -> contextlib.AbstractContextManager[sa.Connection]:
        """See :func:`connect`."""
        return connect(self.engine, what)

    def dispose(self) -> None:
        """Close the pooled connections."""
        self.engine.dispose()


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
        if conn.execute(statement, list(params)).rowcount == len(params):
            savepoint.commit()
            return list(range(len(params)))
        savepoint.rollback()
    return [i for i, p in enumerate(params) if conn.execute(statement, p).rowcount == 1]


def init_db(engine: sa.Engine) -> list[str]:
    """Create the missing tables (contract and own) with their indexes; return their names.

    An existing table is used as it is and never altered (extra columns are fine);
    one that lacks a column MPG needs, or has one of an unsuitable type, raises
    :class:`~mpg.errors.SchemaMismatch` naming each (:mod:`mpg.storage.schema`).
    """
    with begin(engine, "creating tables") as conn:
        missing = set(schema.check(conn).missing_tables)
        created = [t for t in (*tables.CONTRACT_TABLES, *tables.OWN_TABLES) if t.name in missing]
        for table in created:
            # Table.create also creates the table's Index objects (tables.py).
            table.create(conn)
    return [t.name for t in created]
