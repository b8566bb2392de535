"""Every statement the storage layer issues, compiled for SQL Server and checked.

No SQL Server runs here: a scenario runs the repositories on SQLite while every
statement they execute is captured, then each is compiled with the ``mssql``
dialect (as a live SQL Server 2012+ connection would). The claim queries are built
for each dialect and must carry that database's locking idiom.
"""

from __future__ import annotations

import pathlib
import re
from typing import Any

import pytest
import sqlalchemy as sa

from mpg import timefmt
from mpg.server import queues, receipts
from mpg.server import tables as server_tables
from mpg.storage import database, ddl, history, inbox, outbox, states, tables
from mpg.wire import model

S = states.OutboxState
MSSQL = ddl.dialect("mssql")


def scenario(engine: sa.Engine) -> None:
    """Every repository operation the gateway and the CLI use, once."""
    repo = outbox.OutboxRepository(engine, "a@example.com", "utc", instance="gw-1")
    tx = repo.insert({"Subject": "請假", "AttachmentList": "/d/a.png"})
    repo.insert({"TxMessageId": "other"})
    repo.claim(10)
    repo.transition([(tx, "uploading")], S.READY, S.ATTACHMENTS_UPLOADING)
    info = model.AttachmentInfo(1, "a.png", "png", 3, 0, "")
    repo.add_attachments(None, tx, [info], ["/d/a.png"])
    repo.attachments(tx)
    repo.take_over(10)
    repo.transition([(tx, "uploaded")], S.ATTACHMENTS_UPLOADING, S.ATTACHMENTS_UPLOADED)
    repo.transition([(tx, "queued")], S.ATTACHMENTS_UPLOADED, S.WAITING, message_ids={tx: "m"})
    repo.fail("other", S.READY, "bad")
    repo.get(tx)
    repo.counts()
    repo.oldest_pending()
    repo.timed_out(60)
    repo.claims()
    box = inbox.InboxRepository(engine, "a@example.com", "utc")
    delivery = model.Delivery(
        rx_message_id="rx-1",
        message_id="m-1",
        app_code="BPM",
        source_domain="example.com",
        agent_sender="b@example.com",
        sender="alice@example.com",
        owner="a@example.com",
        receiver_type="U",
        receiver_list="a@example.com",
        bcc_list="",
        subject="s",
        content="<c/>",
        content_type="MSG",
        alert_flag=False,
        priority="N",
        keywords="",
        transmit_time=timefmt.now_text("utc"),
        attachments=(model.AttachmentInfo(1, "b.png", "png", 3, 1, ""),),
    )
    box.store([delivery], {("rx-1", 1): b"png"}, {("rx-1", 1): "https://s/1"})
    box.list(None, 10)
    box.list(0, 10, app_code="BPM")
    row = box.get("rx-1")
    assert row is not None
    attachment_id = str(row["attachments"][0]["AttachmentId"])
    box.attachment(attachment_id)
    box.save_attachment_data(attachment_id, b"png")
    box.mark_read(["rx-1"])
    box.mark_recalled("m-1")
    history.timeline(engine, tx)
    history.follow(engine, 0, limit=10)
    history.latest_id(engine)


@pytest.fixture(scope="module")
def statements(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    path: pathlib.Path = tmp_path_factory.mktemp("mssql") / "capture.db"
    engine = database.create_engine(f"sqlite:///{path}")
    database.init_db(engine)
    captured: list[Any] = []

    def capture(conn: Any, clause: Any, *_: Any) -> None:
        if isinstance(clause, sa.sql.ClauseElement):
            captured.append(clause)

    sa.event.listen(engine, "before_execute", capture)
    try:
        scenario(engine)
    finally:
        engine.dispose()
    return captured


def test_every_statement_compiles_for_sql_server(statements: list[Any]) -> None:
    """Each captured statement compiles for mssql: brackets, TOP, no LIMIT or FOR UPDATE."""
    assert len(statements) > 20
    for statement in statements:
        sql = str(statement.compile(dialect=MSSQL))
        assert '"' not in sql, sql
        assert not re.search(r"\bLIMIT\b|\bOFFSET\b|FOR UPDATE|RETURNING", sql), sql


def test_every_kind_of_statement_was_captured(statements: list[Any]) -> None:
    """The scenario covered reads, inserts, compare-and-set updates and deletes."""
    kinds = {type(s).__name__ for s in statements}
    assert {"Select", "Insert", "Update", "Delete"} <= kinds


def test_claim_queries_carry_sql_servers_locking_hints() -> None:
    """Both claim queries read Outbox WITH (UPDLOCK, READPAST, ROWLOCK) and use TOP."""
    for query in (
        outbox.ready_query(MSSQL, 50),
        outbox.in_flight_query(MSSQL, 50),
    ):
        sql = str(query.compile(dialect=MSSQL))
        assert "FROM [Outbox] WITH (UPDLOCK, READPAST, ROWLOCK)" in sql
        assert sql.startswith("SELECT TOP")
        assert "FOR UPDATE" not in sql


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
def test_claim_queries_skip_locked_rows_on_postgresql_and_mariadb(backend: str) -> None:
    """PostgreSQL and MariaDB claim with FOR UPDATE SKIP LOCKED."""
    dialect = ddl.dialect(backend)
    for query in (
        outbox.ready_query(dialect, 50),
        outbox.in_flight_query(dialect, 50),
    ):
        assert str(query.compile(dialect=dialect)).rstrip().endswith("FOR UPDATE SKIP LOCKED")


def test_claim_queries_take_no_row_lock_on_sqlite() -> None:
    """SQLite relies on BEGIN IMMEDIATE: the query itself has no locking clause."""
    dialect = ddl.dialect("sqlite")
    sql = str(outbox.ready_query(dialect, 50).compile(dialect=dialect))
    assert "FOR UPDATE" not in sql
    assert "UPDLOCK" not in sql


def test_mssql_schema_uses_the_documents_native_types() -> None:
    """schema/mssql.sql: nvarchar, nchar(20), bit, varbinary(max), uniqueidentifier."""
    text = ddl.render("mssql")
    for expected in (
        "[Subject] NVARCHAR(200)",
        "[StatusTime] NCHAR(20)",
        "[AlertFlag] BIT",
        "[FileData] VARBINARY(max)",
        "[AttachmentId] UNIQUEIDENTIFIER",
        "[ReceiverList] NVARCHAR(max)",
    ):
        assert expected in text, expected
    assert tables.SOURCE_URI_WIDTH <= 4000  # stays an in-row nvarchar(n)


def test_statements_written_in_bulk_compile_for_sql_server() -> None:
    """On SQLite the bulk writes reach the driver as text (the capture above misses
    them); on SQL Server they are these statements, run by SQLAlchemy."""
    written = [
        *(t.insert() for t in (tables.inbox, tables.inbox_attachment, tables.transition)),
        tables.claim.insert(),
        outbox._CAS,
        inbox._CAS,
    ]
    for statement in written:
        sql = str(statement.compile(dialect=MSSQL))
        assert '"' not in sql, sql
        assert not re.search(r"\bLIMIT\b|\bOFFSET\b|FOR UPDATE|RETURNING", sql), sql


def test_the_servers_update_returning_is_an_output_clause_on_sql_server() -> None:
    """The acks (of entries and of receipts) and the moves to served return their rows
    with OUTPUT inserted.…"""
    for statement in (
        queues._ACK_RETURNING,
        queues._SERVE_RETURNING,
        queues._SERVE_ONCE_RETURNING,
        receipts._ACK_RETURNING,
    ):
        sql = str(statement.compile(dialect=MSSQL))
        assert "OUTPUT inserted." in sql, sql
        assert "RETURNING" not in sql, sql


def test_a_receipt_is_read_as_an_entry_with_sql_server_s_string_concatenation() -> None:
    """A receipt's id is made in the statement: ``+`` on SQL Server, ``||`` elsewhere."""
    queued, expired = receipts.candidate_queries(10)
    for statement in (queued, expired):
        sql = str(statement.compile(dialect=MSSQL))
        assert "'receipt:' + [ReceiptQueue].[MessageId] AS [EntryId]" in sql, sql
        assert "TOP" in sql, sql
        assert "LIMIT" not in sql, sql


def test_a_deployed_transmit_queue_changes_its_key_in_sql_server_syntax() -> None:
    table = server_tables.transmit_queue
    [key] = [c for c in table.constraints if c.name == "UQ_TransmitQueue_TxSender"]
    assert server_tables.key_changes(
        MSSQL, table, [key], ["UQ_TransmitQueue_SenderTx"], ["IX_TransmitQueue_Tx"]
    ) == [
        "ALTER TABLE [TransmitQueue] ADD CONSTRAINT [UQ_TransmitQueue_TxSender]"
        " UNIQUE ([TxMessageId], [SenderAccount])",
        "ALTER TABLE [TransmitQueue] DROP CONSTRAINT [UQ_TransmitQueue_SenderTx]",
        "DROP INDEX [IX_TransmitQueue_Tx] ON [TransmitQueue]",
    ]
