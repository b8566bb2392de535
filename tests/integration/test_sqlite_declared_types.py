"""The original DDL in its SQL Server spelling, on SQLite: judged by the declared type.

SQLite reflects a type it does not know (``bit``, ``varbinary``, ``uniqueidentifier``)
by its affinity alone; the check reads the declared type instead and accepts it when
SQLite keeps the gateway's values unchanged in it.
"""

from __future__ import annotations

import contextlib
import pathlib
import sqlite3
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from mpg import errors
from mpg.db import transactions
from mpg.storage import database, schema, tables

#: Reference §4 as an ERP ports it to SQLite: SQL Server's type names, without
#: ``(max)``, which SQLite cannot parse (docs/databases.md says so).
SQL_SERVER_SPELLING = """
CREATE TABLE Outbox (TxMessageId nvarchar(50) PRIMARY KEY, AppCode nvarchar(20),
  SourceDomain nvarchar(50), AgentSender nvarchar(100), Sender nvarchar(100),
  ReceiverType char(1), ReceiverList nvarchar, BccList nvarchar, Subject nvarchar(200),
  Content nvarchar, ContentType nvarchar(20), AttachmentList nvarchar, AlertFlag bit,
  MessageId nvarchar(50), State int, TransmitTime nchar(20), StatusTime nchar(20),
  StatusLog nvarchar(200), Priority nvarchar(1), Keywords nvarchar(200));
CREATE TABLE Inbox (RxMessageId nvarchar(50) PRIMARY KEY, AppCode nvarchar(20),
  SourceDomain nvarchar(50), AgentSender nvarchar(100), Sender nvarchar(100),
  Owner nvarchar, ReceiverType char(1), ReceiverList nvarchar, BccList nvarchar,
  Subject nvarchar(200), Content nvarchar, ContentType nvarchar(20), AttachmentFlag bit,
  AlertFlag bit, MessageId nvarchar(50), State int, TransmitTime nchar(20),
  ReceiveTime nchar(20), StatusTime nchar(20), StatusLog nvarchar(200),
  Priority nvarchar(1), Keywords nvarchar(200));
CREATE TABLE OutboxAttachment (AttachmentId {uuid} PRIMARY KEY, MessageId nvarchar(50),
  SeqNo int, FileName nvarchar(250), FileType nvarchar(10), FileSize int,
  FileData varbinary, SourceUri nvarchar(10), DownloadFlag int);
CREATE TABLE InboxAttachment (AttachmentId {uuid} PRIMARY KEY, MessageId nvarchar(50),
  SeqNo int, FileName nvarchar(250), FileType nvarchar(10), FileSize int,
  FileData varbinary, SourceUri nvarchar(10), DownloadFlag int);
"""


def erp_database(path: pathlib.Path, uuid_type: str) -> sa.Engine:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript(SQL_SERVER_SPELLING.format(uuid=uuid_type))
    return database.create_engine(f"sqlite:///{path}")


@pytest.fixture
def engine(tmp_path: pathlib.Path) -> Iterator[sa.Engine]:
    eng = erp_database(tmp_path / "erp.db", "char(36)")
    yield eng
    eng.dispose()


def test_bit_and_varbinary_are_accepted_and_keep_their_values(engine: sa.Engine) -> None:
    """bit and varbinary (NUMERIC affinity) are used as they are; values round-trip."""
    created = database.init_db(engine)
    assert not set(created) & {t.name for t in tables.CONTRACT_TABLES}
    blob = bytes(range(256)) + "附件".encode()
    attachment_id = uuid.uuid4()
    with transactions.begin(engine, "test") as conn:
        conn.execute(
            tables.inbox.insert().values(
                RxMessageId="rx-1", State=0, AlertFlag=True, AttachmentFlag=False
            )
        )
        conn.execute(
            tables.inbox_attachment.insert().values(
                AttachmentId=attachment_id, MessageId="rx-1", SeqNo=1, FileData=blob
            )
        )
    with transactions.connect(engine, "test") as conn:
        row = conn.execute(sa.select(tables.inbox.c.AlertFlag, tables.inbox.c.AttachmentFlag)).one()
        stored = conn.execute(sa.select(tables.inbox_attachment)).one()
    assert tuple(row) == (True, False)
    assert stored.FileData == blob
    assert stored.AttachmentId == attachment_id


def test_uniqueidentifier_is_refused_naming_the_spelling_to_use(tmp_path: pathlib.Path) -> None:
    """NUMERIC affinity would turn a uuid like 1234…e5 into a number: say char(36)."""
    eng = erp_database(tmp_path / "erp.db", "uniqueidentifier")
    try:
        with pytest.raises(errors.SchemaMismatch) as caught:
            database.init_db(eng)
    finally:
        eng.dispose()
    message = str(caught.value)
    assert (
        "OutboxAttachment.AttachmentId is declared uniqueidentifier: SQLite gives that NUMERIC "
        "affinity, which turns a uuid that looks like a number into a number; declare it char(36)"
    ) in message
    assert "AlertFlag" not in message
    assert "FileData" not in message


@pytest.mark.parametrize(
    ("declared", "affinity"),
    [
        ("bit", "NUMERIC"),
        ("varbinary", "NUMERIC"),
        ("uniqueidentifier", "NUMERIC"),
        ("nvarchar(50)", "TEXT"),
        ("int", "INTEGER"),
        ("", "BLOB"),
        ("double precision", "REAL"),
    ],
)
def test_sqlite_affinity_follows_sqlites_rules(declared: str, affinity: str) -> None:
    assert schema.sqlite_affinity(declared) == affinity
