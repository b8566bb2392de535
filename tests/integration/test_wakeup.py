"""The SQLite watcher wakes the gateway for other programs' commits, not for its own."""

from __future__ import annotations

import contextlib
import pathlib
import sqlite3
import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from mpg.gateway import wakeup
from mpg.storage import database, outbox, states

GATEWAY = "erp-a@example.com"
#: A bound on waiting for the watcher, not a speed requirement.
PATIENCE = 30.0


@pytest.fixture
def watched(
    tmp_path: pathlib.Path,
) -> Iterator[tuple[pathlib.Path, sa.Engine, wakeup.DatabaseWatcher, threading.Event]]:
    path = tmp_path / "erp.db"
    engine = database.create_engine(f"sqlite:///{path}")
    database.init_db(engine)
    wake = threading.Event()
    watcher = wakeup.DatabaseWatcher(engine, wake)
    watcher.start()
    yield path, engine, watcher, wake
    watcher.stop()
    engine.dispose()
    watcher.close()


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
