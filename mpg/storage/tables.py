"""The gateway's tables, defined once.

``Outbox``, ``OutboxAttachment``, ``Inbox`` and ``InboxAttachment`` are a contract
with existing integrations (reference §4): names, column order, types and widths are
the source document's and must not change. The DDL files in ``schema/`` are generated
from these definitions (``mpg.storage.ddl``) and a test fails when they drift.

Types are SQL Server's; the variants pick the nearest faithful type on the other
databases (``LONGTEXT``/``LONGBLOB`` on MariaDB, where ``TEXT``/``BLOB`` stop at 64 KB).

``MpgTransition`` (the history of every state change), ``MpgClaim`` (which gateway
process works on which Outbox row), ``MpgDropFile`` (the drop files turned into Outbox
rows) and ``MpgExport`` (how far the folder writers got) are the gateway's own tables.
The gateway adds tables but never columns to the contract tables.
"""

from __future__ import annotations

from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from mpg.db import engine

#: ``OutboxAttachment.SourceUri``/``InboxAttachment.SourceUri`` width. The document's
#: nvarchar(10) cannot hold any path or URI; 2048 holds Windows long-ish paths and any
#: URL that browsers and proxies pass in practice. See docs/schema.md.
SOURCE_URI_WIDTH: Final = 2048

metadata = sa.MetaData()


class TimeText(sa.types.TypeDecorator[str]):
    """nchar(20) holding ``yyyy-MM-dd HH:mm:ss``, read without its padding.

    SQL Server and PostgreSQL pad the 19-character text with a blank to 20; reading
    strips it so a time compares and parses the same on every database. On MariaDB
    ``NCHAR`` means ``NATIONAL CHAR``, i.e. utf8mb3; plain ``CHAR`` keeps the table's
    utf8mb4.
    """

    impl = sa.NCHAR(20)
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        """CHAR(20) on MariaDB/MySQL, NCHAR(20) elsewhere."""
        if dialect.name in ("mysql", "mariadb"):
            return mysql.CHAR(20)
        return sa.NCHAR(20)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> str | None:
        """The stored text without the blanks the database padded it with."""
        return None if value is None else str(value).rstrip()


def _time_text() -> TimeText:
    """A new ``nchar(20)`` time column type (see :class:`TimeText`)."""
    return TimeText()


#: Typed loosely: Table() takes dialect options as untyped keyword arguments.
_MARIADB_OPTIONS: Final[dict[str, Any]] = {"mysql_charset": "utf8mb4", "mariadb_charset": "utf8mb4"}

outbox = sa.Table(
    "Outbox",
    metadata,
    sa.Column("TxMessageId", sa.Unicode(50), primary_key=True),
    sa.Column("AppCode", sa.Unicode(20)),
    sa.Column("SourceDomain", sa.Unicode(50)),
    sa.Column("AgentSender", sa.Unicode(100)),
    sa.Column("Sender", sa.Unicode(100)),
    sa.Column("ReceiverType", sa.CHAR(1)),
    sa.Column("ReceiverList", engine.max_text()),
    sa.Column("BccList", engine.max_text()),
    sa.Column("Subject", sa.Unicode(200)),
    sa.Column("Content", engine.max_text()),
    sa.Column("ContentType", sa.Unicode(20)),
    sa.Column("AttachmentList", engine.max_text()),
    sa.Column("AlertFlag", sa.Boolean()),
    sa.Column("MessageId", sa.Unicode(50)),
    sa.Column("State", sa.Integer()),
    sa.Column("TransmitTime", _time_text()),
    sa.Column("StatusTime", _time_text()),
    sa.Column("StatusLog", sa.Unicode(200)),
    sa.Column("Priority", sa.Unicode(1)),
    sa.Column("Keywords", sa.Unicode(200)),
    **_MARIADB_OPTIONS,
)

inbox = sa.Table(
    "Inbox",
    metadata,
    sa.Column("RxMessageId", sa.Unicode(50), primary_key=True),
    sa.Column("AppCode", sa.Unicode(20)),
    sa.Column("SourceDomain", sa.Unicode(50)),
    sa.Column("AgentSender", sa.Unicode(100)),
    sa.Column("Sender", sa.Unicode(100)),
    sa.Column("Owner", engine.max_text()),
    sa.Column("ReceiverType", sa.CHAR(1)),
    sa.Column("ReceiverList", engine.max_text()),
    sa.Column("BccList", engine.max_text()),
    sa.Column("Subject", sa.Unicode(200)),
    sa.Column("Content", engine.max_text()),
    sa.Column("ContentType", sa.Unicode(20)),
    sa.Column("AttachmentFlag", sa.Boolean()),
    sa.Column("AlertFlag", sa.Boolean()),
    sa.Column("MessageId", sa.Unicode(50)),
    sa.Column("State", sa.Integer()),
    sa.Column("TransmitTime", _time_text()),
    sa.Column("ReceiveTime", _time_text()),
    sa.Column("StatusTime", _time_text()),
    sa.Column("StatusLog", sa.Unicode(200)),
    sa.Column("Priority", sa.Unicode(1)),
    sa.Column("Keywords", sa.Unicode(200)),
    **_MARIADB_OPTIONS,
)


def _attachment_table(name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("AttachmentId", sa.Uuid(), primary_key=True),
        sa.Column("MessageId", sa.Unicode(50)),
        sa.Column("SeqNo", sa.Integer()),
        sa.Column("FileName", sa.Unicode(250)),
        sa.Column("FileType", sa.Unicode(10)),
        sa.Column("FileSize", sa.Integer()),
        sa.Column("FileData", engine.max_binary()),
        sa.Column("SourceUri", sa.Unicode(SOURCE_URI_WIDTH)),
        sa.Column("DownloadFlag", sa.Integer()),
        **_MARIADB_OPTIONS,
    )


outbox_attachment = _attachment_table("OutboxAttachment")
inbox_attachment = _attachment_table("InboxAttachment")

#: The gateway's own history of state changes (never part of the ERP contract).
transition = sa.Table(
    "MpgTransition",
    metadata,
    sa.Column("Id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("Box", sa.Unicode(3), nullable=False),  # "out" or "in"
    sa.Column("MessageKey", sa.Unicode(50), nullable=False),  # TxMessageId or RxMessageId
    sa.Column("FromState", sa.Integer()),
    sa.Column("ToState", sa.Integer(), nullable=False),
    # ISO-8601 UTC with microseconds and Z: 27 characters (SQLite ignored a width of 26).
    sa.Column("At", sa.Unicode(27), nullable=False),
    sa.Column("Reason", sa.Unicode(200), nullable=False),
    sa.Column("Gateway", sa.Unicode(100), nullable=False),
    sa.Index("IX_MpgTransition_MessageKey", "MessageKey"),
    **_MARIADB_OPTIONS,
)

#: Which gateway process works on an Outbox row, and until when (docs/databases.md).
#: A row taken from State 10 gets a claim in the same short transaction; the claim is
#: renewed at each in-flight step and deleted when the row leaves the in-flight states.
#: Another gateway takes a row in flight over only once its lease ran out (the process
#: holding it died). The primary key makes two claims on one row impossible.
claim = sa.Table(
    "MpgClaim",
    metadata,
    sa.Column("TxMessageId", sa.Unicode(50), primary_key=True),
    sa.Column("Gateway", sa.Unicode(200), nullable=False),  # [gateway] instance of the process
    # Same text form as MpgTransition.At: compares in time order on every database.
    sa.Column("LeaseUntil", sa.Unicode(27), nullable=False),
    **_MARIADB_OPTIONS,
)

#: One row per drop file turned into an Outbox row, written in the same transaction
#: as that row: a file met again after a crash is recognised and not sent twice.
drop_file = sa.Table(
    "MpgDropFile",
    metadata,
    sa.Column("TxMessageId", sa.Unicode(50), primary_key=True),
    sa.Column("FileName", sa.Unicode(255), nullable=False),
    sa.Column("Sha256", sa.CHAR(64), nullable=False),  # lowercase hex of the file's bytes
    sa.Column("At", sa.Unicode(27), nullable=False),  # as MpgTransition.At
    **_MARIADB_OPTIONS,
)

#: Where each folder writer (inbound messages, receipts) stands in ``MpgTransition``:
#: the files of every history row up to ``LastId`` are written.
export = sa.Table(
    "MpgExport",
    metadata,
    sa.Column("Name", sa.Unicode(50), primary_key=True),
    sa.Column("LastId", sa.Integer(), nullable=False),
    sa.Column("At", sa.Unicode(27), nullable=False),  # as MpgTransition.At
    **_MARIADB_OPTIONS,
)

#: The contract tables, in the order they are created.
CONTRACT_TABLES: Final = (outbox, outbox_attachment, inbox, inbox_attachment)
#: Tables the gateway owns.
OWN_TABLES: Final = (transition, claim, drop_file, export)

#: Index helping the pickup query; created only with tables MPG creates itself.
outbox_pickup_index = sa.Index("IX_Outbox_State", outbox.c.State)
inbox_state_index = sa.Index("IX_Inbox_State", inbox.c.State)
outbox_attachment_message_index = sa.Index(
    "IX_OutboxAttachment_MessageId", outbox_attachment.c.MessageId
)
inbox_attachment_message_index = sa.Index(
    "IX_InboxAttachment_MessageId", inbox_attachment.c.MessageId
)
