"""An ERP writing to a SQLite Outbox is never refused because the gateway holds the lock."""

from __future__ import annotations

import contextlib
import pathlib
import sqlite3
from collections.abc import Iterator, Sequence

import pytest
import sqlalchemy as sa

from mpg.storage import database, outbox, states

GATEWAY = "erp-a@example.com"


@pytest.fixture
def sqlite_file(tmp_path: pathlib.Path) -> Iterator[tuple[pathlib.Path, sa.Engine]]:
    path = tmp_path / "erp.db"
    engine = database.create_engine(f"sqlite:///{path}")
    database.init_db(engine)
    yield path, engine
    engine.dispose()


def _erp_inserts(path: pathlib.Path, tx: str, priority: str) -> None:
    """The ERP inserts a ready row, waiting for no lock (timeout 0)."""
    with contextlib.closing(sqlite3.connect(path, timeout=0, isolation_level=None)) as erp:
        erp.execute(
            'INSERT INTO "Outbox" ("TxMessageId", "State", "Priority") VALUES (?, ?, ?)',
            (tx, states.OutboxState.READY, priority),
        )


def _plan_inserting(
    path: pathlib.Path, planned: list[list[str]], tx: str, priority: str
) -> outbox.Plan:
    """A plan that notes the rows it is given, starts them all, and has the ERP insert
    row ``tx`` while the first batch is being planned."""

    def plan(rows: Sequence[outbox.OutboxRow]) -> list[outbox.Start]:
        planned.append([r.tx_message_id for r in rows])
        if len(planned) == 1:
            _erp_inserts(path, tx, priority)
        return [
            outbox.Start(r.tx_message_id, states.OutboxState.ATTACHMENTS_UPLOADED, "claimed")
            for r in rows
        ]

    return plan


def test_claim_with_nothing_ready_needs_no_write_lock(
    sqlite_file: tuple[pathlib.Path, sa.Engine],
) -> None:
    """A wake-up that finds no ready row reads only: it works while the ERP holds the lock."""
    path, engine = sqlite_file
    repo = outbox.OutboxRepository(engine, GATEWAY, "utc", instance="a")
    with contextlib.closing(sqlite3.connect(path, timeout=0, isolation_level=None)) as erp:
        erp.execute("BEGIN IMMEDIATE")
        erp.execute(
            'INSERT INTO "Outbox" ("TxMessageId", "State", "Priority") VALUES (?, ?, ?)',
            ("tx-uncommitted", states.OutboxState.READY, "N"),
        )
        # The claim of a gateway holding the write lock would wait out its busy timeout
        # and fail with "database is locked"; reading needs no lock in WAL mode.
        assert repo.claim(10) == []
        assert repo.take_over(10) == []
        assert repo.sweep_claims() == 0
        erp.execute("COMMIT")
    assert [r.tx_message_id for r in repo.claim(10)] == ["tx-uncommitted"]


def test_a_batch_is_planned_while_the_erp_can_still_write(
    sqlite_file: tuple[pathlib.Path, sa.Engine],
) -> None:
    """Validating and building the rows (the plan) happens before the write lock is
    taken; a row that appeared meanwhile is planned under the lock and claimed too."""
    path, engine = sqlite_file
    repo = outbox.OutboxRepository(engine, GATEWAY, "utc", instance="a")
    repo.insert({"TxMessageId": "ready"})
    planned: list[list[str]] = []

    # With the gateway holding the lock, the insert would fail at once: timeout 0.
    moved = repo.claim_and_start(10, _plan_inserting(path, planned, "during-plan", "N"))
    assert planned == [["ready"], ["during-plan"]]
    assert moved == {
        "ready": states.OutboxState.ATTACHMENTS_UPLOADED,
        "during-plan": states.OutboxState.ATTACHMENTS_UPLOADED,
    }


def test_under_a_backlog_a_row_written_during_the_plan_waits_for_the_next_claim(
    sqlite_file: tuple[pathlib.Path, sa.Engine],
) -> None:
    """A full batch is claimed among the rows read before the lock (by key, without
    sorting every waiting row again): an urgent row the ERP wrote meanwhile is not
    slipped in, and the next claim takes it first."""
    path, engine = sqlite_file
    repo = outbox.OutboxRepository(engine, GATEWAY, "utc", instance="a")
    repo.insert({"TxMessageId": "first", "Priority": "N"})
    repo.insert({"TxMessageId": "second", "Priority": "N"})
    planned: list[list[str]] = []

    plan = _plan_inserting(path, planned, "urgent", "H")
    assert repo.claim_and_start(1, plan) == {"first": states.OutboxState.ATTACHMENTS_UPLOADED}
    assert planned == [["first"]]
    assert repo.claim_and_start(1, plan) == {"urgent": states.OutboxState.ATTACHMENTS_UPLOADED}
    assert repo.claim_and_start(1, plan) == {"second": states.OutboxState.ATTACHMENTS_UPLOADED}


def test_a_row_the_erp_changed_while_the_batch_was_planned_is_planned_again(
    sqlite_file: tuple[pathlib.Path, sa.Engine],
) -> None:
    """Only the changed row is planned a second time, from what the ERP wrote last."""
    path, engine = sqlite_file
    repo = outbox.OutboxRepository(engine, GATEWAY, "utc", instance="a")
    repo.insert({"TxMessageId": "kept", "Subject": "as written"})
    repo.insert({"TxMessageId": "edited", "Subject": "first draft"})
    planned: list[list[tuple[str, str | None]]] = []

    def plan(rows: Sequence[outbox.OutboxRow]) -> list[outbox.Start]:
        planned.append([(r.tx_message_id, r.subject) for r in rows])
        if len(planned) == 1:
            with contextlib.closing(sqlite3.connect(path, timeout=0, isolation_level=None)) as erp:
                erp.execute(
                    'UPDATE "Outbox" SET "Subject" = ? WHERE "TxMessageId" = ?',
                    ("final", "edited"),
                )
        return [
            outbox.Start(r.tx_message_id, states.OutboxState.ATTACHMENTS_UPLOADED, r.subject or "")
            for r in rows
        ]

    moved = repo.claim_and_start(10, plan)
    assert sorted(planned[0]) == [("edited", "first draft"), ("kept", "as written")]
    assert planned[1:] == [[("edited", "final")]]
    assert set(moved) == {"kept", "edited"}
