"""The SQLite watcher wakes the gateway for other programs' commits, not for its own."""

from __future__ import annotations

import contextlib
import pathlib
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Sequence

import pytest
import sqlalchemy as sa

from mpg.gateway import filewatch, wakeup
from mpg.storage import database, outbox, states

GATEWAY = "erp-a@example.com"
#: A bound on waiting for the watcher, not a speed requirement.
PATIENCE = 30.0


#: The platform's own watch (inotify read directly on Linux) and watchdog's observer
#: (what other platforms use).
WATCHES: dict[str, Callable[[Sequence[str]], filewatch.FileWatch]] = {
    "platform": filewatch.watch,
    "watchdog": filewatch.ObserverWatch,
}


@contextlib.contextmanager
def watching(
    path: pathlib.Path, files: Callable[[Sequence[str]], filewatch.FileWatch]
) -> Iterator[tuple[pathlib.Path, sa.Engine, wakeup.DatabaseWatcher, threading.Event]]:
    """A gateway database at ``path`` and its watcher, started, with ``files``."""
    engine = database.create_engine(f"sqlite:///{path}")
    database.init_db(engine)
    wake = threading.Event()
    watcher = wakeup.DatabaseWatcher(engine, wake, files)
    watcher.start()
    try:
        yield path, engine, watcher, wake
    finally:
        watcher.stop()
        engine.dispose()
        watcher.close()


@pytest.fixture(params=sorted(WATCHES))
def watched(
    tmp_path: pathlib.Path, request: pytest.FixtureRequest
) -> Iterator[tuple[pathlib.Path, sa.Engine, wakeup.DatabaseWatcher, threading.Event]]:
    with watching(tmp_path / "erp.db", WATCHES[request.param]) as world:
        yield world


def erp_insert(path: pathlib.Path, tx: str) -> None:
    """An INSERT committed by another connection, as the ERP makes it."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as erp:
        erp.execute(
            'INSERT INTO "Outbox" ("TxMessageId", "State", "Priority") VALUES (?, ?, ?)',
            (tx, states.OutboxState.READY, "N"),
        )


def gateway_writes(repo: outbox.OutboxRepository, n: int) -> None:
    """The gateway's own commits: rows inserted, claimed and walked to 12."""
    for _ in range(n):
        repo.insert({"Subject": "own"})
    rows = [r for r in repo.claim(n + 1) if r.subject == "own"]
    repo.transition(
        [(r.tx_message_id, "claimed") for r in rows],
        states.OutboxState.READY,
        states.OutboxState.ATTACHMENTS_UPLOADED,
    )


def test_an_external_insert_wakes_and_own_writes_do_not(
    watched: tuple[pathlib.Path, sa.Engine, wakeup.DatabaseWatcher, threading.Event],
) -> None:
    """Dozens of the gateway's own commits set no wake-up; each ERP INSERT sets one.

    File events arrive in order, so once the ERP's wake-up is seen every event of the
    gateway's earlier commits has been looked at: the count is exact.
    """
    path, engine, watcher, wake = watched
    repo = outbox.OutboxRepository(engine, GATEWAY, "utc", instance="a")
    gateway_writes(repo, 20)
    erp_insert(path, "erp-1")
    assert wake.wait(PATIENCE)
    assert watcher.wakeups == 1
    wake.clear()
    gateway_writes(repo, 20)
    erp_insert(path, "erp-2")
    assert wake.wait(PATIENCE)
    assert watcher.wakeups == 2


def test_another_gateway_process_commit_wakes(
    watched: tuple[pathlib.Path, sa.Engine, wakeup.DatabaseWatcher, threading.Event],
) -> None:
    """A second gateway on the same Outbox (its own engine) is another program."""
    path, _, watcher, wake = watched
    other = database.create_engine(f"sqlite:///{path}")
    try:
        outbox.OutboxRepository(other, GATEWAY, "utc", instance="b").insert({"Subject": "x"})
    finally:
        other.dispose()
    assert wake.wait(PATIENCE)
    assert watcher.wakeups >= 1


def test_a_gateway_commit_that_wrote_nothing_hides_no_erp_insert(
    watched: tuple[pathlib.Path, sa.Engine, wakeup.DatabaseWatcher, threading.Event],
) -> None:
    """An UPDATE to the values a row already holds changes rows but writes nothing; the
    ERP's INSERT after it is still seen as someone else's."""
    path, engine, watcher, wake = watched
    erp_insert(path, "erp-1")
    assert wake.wait(PATIENCE)
    wake.clear()
    with engine.begin() as conn:
        conn.execute(sa.text('UPDATE "Outbox" SET "Priority" = "Priority"'))
    erp_insert(path, "erp-2")
    assert wake.wait(PATIENCE)
    assert watcher.wakeups == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify: Linux only")
def test_writes_to_another_database_in_the_folder_never_reach_the_watcher(
    tmp_path: pathlib.Path,
) -> None:
    """The kernel filters (inotify on the files, Linux): a busy neighbour database (the
    server's, another gateway's) in the same folder sends the watcher no events,
    however much it writes."""
    with watching(tmp_path / "erp.db", filewatch.watch) as (path, _, watcher, wake):
        events = neighbour_events(path, watcher, wake)
    # The ERP's INSERT: a few writes to the WAL. Watching the folder, each of the
    # neighbour's 50 commits arrived as events too.
    assert events < 10


def neighbour_events(
    path: pathlib.Path, watcher: wakeup.DatabaseWatcher, wake: threading.Event
) -> int:
    """Events the watcher counted for 50 commits to a database beside ``path`` and one
    ERP INSERT into it (waited for)."""
    neighbour = path.with_name("server.db")
    with contextlib.closing(sqlite3.connect(neighbour, isolation_level=None)) as other:
        other.execute("PRAGMA journal_mode=WAL")
        other.execute("CREATE TABLE t (v TEXT)")
        before = watcher.events
        for i in range(50):
            other.execute("INSERT INTO t VALUES (?)", (str(i),))
        erp_insert(path, "erp-1")
        assert wake.wait(PATIENCE)
    return watcher.events - before


def test_a_wal_made_anew_is_watched_again(
    watched: tuple[pathlib.Path, sa.Engine, wakeup.DatabaseWatcher, threading.Event],
) -> None:
    """SQLite deletes the WAL when the last connection closes; the next write makes a
    new file, and commits to it still wake the gateway."""
    path, engine, watcher, wake = watched
    wal = path.with_name(path.name + "-wal")
    engine.dispose()
    assert not wal.exists()
    erp_insert(path, "erp-1")  # makes the WAL anew
    assert wake.wait(PATIENCE)
    wake.clear()
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as erp:
        erp.execute("SELECT 1")  # holds the new WAL open, as a connected gateway does
        erp_insert(path, "erp-2")
        assert wake.wait(PATIENCE)
        wake.clear()
        erp_insert(path, "erp-3")
        assert wake.wait(PATIENCE)
    assert watcher.wakeups >= 3
