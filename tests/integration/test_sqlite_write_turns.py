"""Write transactions on a SQLite file wait for its write lock without SQLite's sleeps.

SQLite's busy handler sleeps 1, 2, 5, 10 ms... between looks at a lock held elsewhere.
A process's own writers take turns at an in-process lock before ``BEGIN IMMEDIATE``;
a lock held by another process is looked at again every fraction of a millisecond
(mpg/db/transactions.py, mpg/db/engine.py). Which statements ran is seen through
SQLite's own trace callback on the connections.
"""

from __future__ import annotations

import contextlib
import pathlib
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from mpg import errors
from mpg.db import transactions
from mpg.storage import database

#: A bound on waiting for a thread, not a speed requirement.
PATIENCE = 3.0


class Begins:
    """Every ``BEGIN IMMEDIATE`` the engine's connections start, by thread name."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.seen = threading.Condition()

    def trace(self, statement: str) -> None:
        if statement.startswith("BEGIN IMMEDIATE"):
            with self.seen:
                self.threads.append(threading.current_thread().name)
                self.seen.notify_all()

    def wait_for(self, count: int) -> bool:
        with self.seen:
            return self.seen.wait_for(lambda: len(self.threads) >= count, PATIENCE)


@pytest.fixture
def traced(tmp_path: pathlib.Path) -> Iterator[tuple[pathlib.Path, sa.Engine, Begins]]:
    path = tmp_path / "erp.db"
    engine = database.create_engine(f"sqlite:///{path}")
    database.init_db(engine)
    begins = Begins()

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_trace_callback(begins.trace)

    engine.dispose()  # connections made from now on are traced
    sa.event.listen(engine, "connect", on_connect)
    yield path, engine, begins
    engine.dispose()


INSERT = sa.text(
    'INSERT INTO "Outbox" ("TxMessageId", "State", "Priority") VALUES (:tx, 10, \'N\')'
)


def insert(engine: sa.Engine, tx: str) -> None:
    with transactions.begin(engine, "test insert") as conn:
        conn.execute(INSERT, {"tx": tx})


def writer(engine: sa.Engine, tx: str, name: str) -> tuple[threading.Thread, list[BaseException]]:
    """A thread (not started) inserting ``tx`` in a write transaction, and its failures."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            insert(engine, tx)
        except BaseException as exc:  # reported by the test's assertions
            failures.append(exc)

    return threading.Thread(target=run, name=name), failures


def outbox_ids(path: pathlib.Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return {tx for (tx,) in db.execute('SELECT "TxMessageId" FROM "Outbox"')}


def test_a_second_writer_of_the_process_begins_only_after_the_first_is_done(
    traced: tuple[pathlib.Path, sa.Engine, Begins],
) -> None:
    """While one thread's write transaction is open, another thread's write does not
    knock at SQLite's lock (where it would sleep in the busy handler); it begins once
    the first one commits, and both rows are there."""
    path, engine, begins = traced
    second, failures = writer(engine, "second", "second-writer")
    with transactions.begin(engine, "first") as conn:
        conn.execute(INSERT, {"tx": "first"})
        second.start()
        # Before the turns, the second thread's BEGIN IMMEDIATE ran at once and slept.
        assert not begins.wait_for(2)
        assert begins.threads == ["MainThread"]
    second.join(PATIENCE)
    assert not second.is_alive()
    assert failures == []
    assert begins.threads == ["MainThread", "second-writer"]
    assert outbox_ids(path) == {"first", "second"}


def test_a_writer_looks_again_at_a_lock_another_process_holds(
    traced: tuple[pathlib.Path, sa.Engine, Begins],
) -> None:
    """The ERP holds the write lock: the gateway's transaction tries ``BEGIN IMMEDIATE``
    again by itself (SQLite's busy handler would sleep inside ONE try), and begins
    when the ERP commits."""
    path, engine, begins = traced
    gateway, failures = writer(engine, "gateway", "gateway-writer")
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as erp:
        erp.execute("BEGIN IMMEDIATE")
        erp.execute(
            'INSERT INTO "Outbox" ("TxMessageId", "State", "Priority") VALUES (?, 10, ?)',
            ("erp", "N"),
        )
        gateway.start()
        looked_again = begins.wait_for(2)
        erp.execute("COMMIT")
    gateway.join(PATIENCE + 5)
    assert looked_again
    assert failures == []
    assert outbox_ids(path) == {"erp", "gateway"}


def test_a_lock_never_released_is_still_a_transient_database_is_locked(
    traced: tuple[pathlib.Path, sa.Engine, Begins],
) -> None:
    """Past the quick looks, SQLite's busy timeout (here none) decides, and the error
    is the StorageError the workers retry, not a raw driver error."""
    path, engine, _ = traced

    def no_busy_timeout(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=0")

    engine.dispose()
    sa.event.listen(engine, "connect", no_busy_timeout)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as erp:
        erp.execute("BEGIN IMMEDIATE")
        with pytest.raises(errors.StorageError, match="database is locked") as caught:
            insert(engine, "gateway")
        erp.execute("ROLLBACK")
    assert transactions.is_transient(caught.value)
    insert(engine, "later")
    assert outbox_ids(path) == {"later"}
