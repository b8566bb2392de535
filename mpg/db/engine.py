"""Engines from URLs, with the settings each database needs, and portable column types.

Both programs get their engines here; what differs between them is passed in as an
:class:`EngineOptions` (the configuration key to name in errors, the pool, the
isolation level on MariaDB). What a database itself needs is decided here alone:

* SQLite runs in WAL mode so the ERP can read while MPG writes, ``synchronous=NORMAL``
  (durable against process crashes; only a power cut may lose the last transactions,
  which clients resend), a busy timeout, foreign keys on. pysqlite's own transaction
  handling is switched off and ``BEGIN`` is emitted by :mod:`mpg.db.transactions`:
  write transactions use ``BEGIN IMMEDIATE`` so a read-then-update holds the write
  lock from its first statement (no ``SQLITE_BUSY`` on lock upgrade, which the busy
  timeout cannot wait out), and savepoints work.
* MariaDB/MySQL connections speak utf8mb4 unless the URL says otherwise (the
  driver's default, utf8mb3 or latin1, cannot carry every Chinese character).
* Every other database gets ``pool_pre_ping`` so a connection the server closed is
  replaced before use.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from mpg import errors
from mpg.db import checkpoints, hints

#: How long SQLite waits for a lock before answering "database is locked" (ms).
SQLITE_BUSY_TIMEOUT_MS: Final = 5000

#: Pauses (seconds) between quick tries of ``BEGIN IMMEDIATE`` while another process
#: holds the write lock, about 50 ms in all; then SQLite's busy handler waits as before.
_QUICK_PAUSES: Final = (0.0002,) * 5 + (0.0005,) * 4 + (0.001,) * 10 + (0.002,) * 20
#: SQLite's primary result code for a lock held elsewhere (extended codes share it).
_SQLITE_BUSY: Final = 5

#: Execution option marking a connection whose transactions will write.
WRITE_OPTION: Final = "mpg_write"


@dataclasses.dataclass(frozen=True)
class EngineOptions:
    """What one program wants of its engine, beyond what the database needs."""

    #: The configuration key of the URL, named in every configuration error.
    url_key: str
    #: Pooled connections (``None``: SQLAlchemy's default); not for in-memory SQLite.
    pool_size: int | None = None
    max_overflow: int | None = None
    #: READ COMMITTED on MariaDB/MySQL instead of InnoDB's REPEATABLE READ.
    read_committed: bool = False


def create_engine(url: str, options: EngineOptions) -> sa.Engine:
    """An engine for ``url`` (see docs/databases.md for the URL of each database).

    A malformed URL, or one naming a driver that is not installed, is a
    :class:`~mpg.errors.ConfigError` naming ``options.url_key`` (and, for a missing
    driver, the fix: :mod:`mpg.db.hints`).
    """
    try:
        url_obj = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise errors.ConfigError(f"{options.url_key}: {exc}") from exc
    backend = url_obj.get_backend_name()
    kwargs: dict[str, Any] = {}
    if options.pool_size is not None and url_obj.database not in (None, "", ":memory:"):
        kwargs.update(pool_size=options.pool_size, max_overflow=options.max_overflow)
    if backend in ("mysql", "mariadb"):
        if "charset" not in url_obj.query:
            url_obj = url_obj.update_query_dict({"charset": "utf8mb4"})
        if options.read_committed:
            kwargs["isolation_level"] = "READ COMMITTED"
    if backend != "sqlite":
        kwargs["pool_pre_ping"] = True
    try:
        engine = sa.create_engine(url_obj, **kwargs)
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        raise errors.ConfigError(
            hints.driver_problem(options.url_key, url_obj.drivername, exc)
        ) from exc
    except sa.exc.ArgumentError as exc:
        raise errors.ConfigError(f"{options.url_key}: {exc}") from exc
    if backend == "sqlite":
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
        # The checkpointer thread checkpoints (mpg.db.checkpoints); this is its net.
        cursor.execute(f"PRAGMA wal_autocheckpoint={checkpoints.SAFETY_PAGES}")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: sa.Connection) -> None:
    if not conn.get_execution_options().get(WRITE_OPTION, False):
        conn.exec_driver_sql("BEGIN")
    elif not _begin_quickly(conn):
        # SQLite's busy handler waits out the rest; its errors arrive as always.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _begin_quickly(conn: sa.Connection) -> bool:
    """Try ``BEGIN IMMEDIATE`` with short pauses while another process holds the write
    lock; True once the transaction has begun.

    SQLite's own busy handler sleeps 1, 2, 5, 10, 15 ms... between looks, so a lock
    another process (the ERP) held for 1.1 ms cost 3 ms and one held 3.1 ms cost 8 ms;
    looking every 0.2 to 2 ms instead starts the transaction within a fraction of a
    millisecond of the lock's release. Any error other than "busy" is left to the
    ordinary ``BEGIN IMMEDIATE`` to raise.
    """
    raw = conn.connection.dbapi_connection
    assert raw is not None  # a checked-out connection always has one
    cursor = raw.cursor()
    try:
        timeout = int(cursor.execute("PRAGMA busy_timeout").fetchone()[0])
        cursor.execute("PRAGMA busy_timeout=0")
        try:
            return _try_begin(cursor)
        finally:
            cursor.execute(f"PRAGMA busy_timeout={timeout}")
    except sqlite3.Error:
        return False  # a connection that fails here fails the ordinary BEGIN as well
    finally:
        cursor.close()


def _try_begin(cursor: Any) -> bool:
    for pause in (0.0, *_QUICK_PAUSES):
        if pause:
            time.sleep(pause)
        try:
            cursor.execute("BEGIN IMMEDIATE")
            return True
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != _SQLITE_BUSY:
                return False
    return False


def max_text() -> sa.types.TypeEngine[str]:
    """nvarchar(max): NVARCHAR(max) on SQL Server, LONGTEXT on MariaDB, TEXT elsewhere."""
    return sa.UnicodeText().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def max_binary() -> sa.types.TypeEngine[bytes]:
    """varbinary(max): VARBINARY(max) on SQL Server, LONGBLOB on MariaDB, BYTEA/BLOB."""
    return sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
