"""The original product's tables, as reference §4 declares them (SQL Server types).

The ERPs MPG replaces already have these tables, created by the original product's
DDL: the document's widths, ``SourceUri nvarchar(10)``, no MPG indexes and no table
options. On the other databases the same declaration gives the nearest types
(``nvarchar`` -> VARCHAR, ``bit`` -> BOOLEAN / TINYINT(1), ``uniqueidentifier`` ->
UUID / CHAR(32)), i.e. what an ERP ported to them would have.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

metadata = sa.MetaData()

_MAX_TEXT = sa.UnicodeText().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
_MAX_BINARY = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")


def _message_columns(key: str, middle: list[sa.Column[object]]) -> list[sa.Column[object]]:
    return [
        sa.Column(key, sa.Unicode(50), primary_key=True),
        sa.Column("AppCode", sa.Unicode(20)),
        sa.Column("SourceDomain", sa.Unicode(50)),
        sa.Column("AgentSender", sa.Unicode(100)),
        sa.Column("Sender", sa.Unicode(100)),
        *middle,
    ]


outbox = sa.Table(
    "Outbox",
    metadata,
    *_message_columns("TxMessageId", []),
    sa.Column("ReceiverType", sa.CHAR(1)),
    sa.Column("ReceiverList", _MAX_TEXT),
    sa.Column("BccList", _MAX_TEXT),
    sa.Column("Subject", sa.Unicode(200)),
    sa.Column("Content", _MAX_TEXT),
    sa.Column("ContentType", sa.Unicode(20)),
    sa.Column("AttachmentList", _MAX_TEXT),
    sa.Column("AlertFlag", sa.Boolean()),
    sa.Column("MessageId", sa.Unicode(50)),
    sa.Column("State", sa.Integer()),
    sa.Column("TransmitTime", sa.NCHAR(20)),
    sa.Column("StatusTime", sa.NCHAR(20)),
    sa.Column("StatusLog", sa.Unicode(200)),
    sa.Column("Priority", sa.Unicode(1)),
    sa.Column("Keywords", sa.Unicode(200)),
)

inbox = sa.Table(
    "Inbox",
    metadata,
    *_message_columns("RxMessageId", [sa.Column("Owner", _MAX_TEXT)]),
    sa.Column("ReceiverType", sa.CHAR(1)),
    sa.Column("ReceiverList", _MAX_TEXT),
    sa.Column("BccList", _MAX_TEXT),
    sa.Column("Subject", sa.Unicode(200)),
    sa.Column("Content", _MAX_TEXT),
    sa.Column("ContentType", sa.Unicode(20)),
    sa.Column("AttachmentFlag", sa.Boolean()),
    sa.Column("AlertFlag", sa.Boolean()),
    sa.Column("MessageId", sa.Unicode(50)),
    sa.Column("State", sa.Integer()),
    sa.Column("TransmitTime", sa.NCHAR(20)),
    sa.Column("ReceiveTime", sa.NCHAR(20)),
    sa.Column("StatusTime", sa.NCHAR(20)),
    sa.Column("StatusLog", sa.Unicode(200)),
    sa.Column("Priority", sa.Unicode(1)),
    sa.Column("Keywords", sa.Unicode(200)),
)


def _attachment(name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("AttachmentId", sa.Uuid(), primary_key=True),
        sa.Column("MessageId", sa.Unicode(50)),
        sa.Column("SeqNo", sa.Integer()),
        sa.Column("FileName", sa.Unicode(250)),
        sa.Column("FileType", sa.Unicode(10)),
        sa.Column("FileSize", sa.Integer()),
        sa.Column("FileData", _MAX_BINARY),
        sa.Column("SourceUri", sa.Unicode(10)),  # sic: the document's width
        sa.Column("DownloadFlag", sa.Integer()),
    )


outbox_attachment = _attachment("OutboxAttachment")
inbox_attachment = _attachment("InboxAttachment")
