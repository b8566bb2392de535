"""The push server's own database: its tables, defined once, and its engine.

The server keeps its data apart from any gateway (``server.database_url``, SQLite by
default). ``TransmitQueue`` and ``ReceiveQueue`` carry the names the source document
gives the server's queues (reference §1); their columns are this project's, because
the document never defines them and outside systems never read them (reference §2).

* ``Account`` / ``AccountKey``: who may talk to the server. Keys are stored wrapped
  with the master key (AES-256-GCM), never in plain text.
* ``TransmitQueue``: one row per accepted message (``MessageId``), idempotent per
  ``(SenderAccount, TxMessageId)``; ``SubmitResult`` holds the answer given the first
  time, so a resubmission gets exactly the same answer.
* ``TransmitAttachment``: the message's attachments; ``BlobPath`` is the file under
  ``data_dir/blobs`` that the staged upload left there.
* ``ReceiveQueue``: one entry per recipient per message (``EntryId`` is the
  recipient's ``RxMessageId``), plus receipt entries for senders. ``CreatedSeq`` is
  a monotonic number that orders entries of equal priority by arrival.
* ``UploadStage``: attachment uploads in progress, keyed by (account, tx, seq).
* ``SeenNonce``: request nonces accepted within the replay window, by any process.

Times the server decides are Unix seconds (``float``) where it computes with them
(leases, arrival) and ``yyyy-MM-dd HH:mm:ss`` UTC text where people read them.
"""

from __future__ import annotations

import collections.abc
from typing import Any, Final, TypeAlias

import sqlalchemy as sa

from mpg import errors
from mpg.db import engine as engines
from mpg.db import notify, transactions

#: A result row of any shape (rows are read by column name).
Row: TypeAlias = sa.Row[*tuple[Any, ...]]

metadata = sa.MetaData()


account = sa.Table(
    "Account",
    metadata,
    # Lower-cased 'name@domain' for users and gateways; device serials as given.
    sa.Column("AccountId", sa.Unicode(100), primary_key=True),
    sa.Column("Kind", sa.Unicode(10), nullable=False),  # gateway | user | device
    sa.Column("Disabled", sa.Boolean(), nullable=False, default=False),
    sa.Column("CreatedAt", sa.Unicode(20), nullable=False),
)

account_key = sa.Table(
    "AccountKey",
    metadata,
    sa.Column("AccountId", sa.Unicode(100), primary_key=True),
    sa.Column("KeyId", sa.Unicode(50), primary_key=True),
    sa.Column("WrappedKey", sa.LargeBinary(), nullable=False),
    sa.Column("Disabled", sa.Boolean(), nullable=False, default=False),
    sa.Column("CreatedAt", sa.Unicode(20), nullable=False),
)

transmit_queue = sa.Table(
    "TransmitQueue",
    metadata,
    sa.Column("MessageId", sa.Unicode(50), primary_key=True),
    sa.Column("SenderAccount", sa.Unicode(100), nullable=False),
    sa.Column("TxMessageId", sa.Unicode(50), nullable=False),
    sa.Column("AppCode", sa.Unicode(20)),
    sa.Column("SourceDomain", sa.Unicode(50)),
    sa.Column("AgentSender", sa.Unicode(100)),
    sa.Column("Sender", sa.Unicode(100)),
    sa.Column("ReceiverType", sa.CHAR(1)),
    sa.Column("ReceiverList", engines.max_text()),
    sa.Column("BccList", engines.max_text()),
    sa.Column("Subject", sa.Unicode(200)),
    sa.Column("Content", engines.max_text()),
    sa.Column("ContentType", sa.Unicode(20)),
    sa.Column("AlertFlag", sa.Boolean()),
    sa.Column("Priority", sa.Unicode(1)),
    sa.Column("Keywords", sa.Unicode(200)),
    sa.Column("TransmitTime", sa.Unicode(20)),
    sa.Column("ReceivedAt", sa.Float(), nullable=False),
    sa.Column("RecipientCount", sa.Integer(), nullable=False),
    sa.Column("ServedCount", sa.Integer(), nullable=False, default=0),
    sa.Column("RecalledCount", sa.Integer(), nullable=False, default=0),
    sa.Column("State", sa.Unicode(10), nullable=False),  # queued | served
    # JSON of the first answer, returned again to a resubmission.
    sa.Column("SubmitResult", engines.max_text(), nullable=False),
    # SHA-256 of the message's content (mpg.server.identity.digest): the same
    # TxMessageId with other content is refused. NULL on rows from before the column.
    sa.Column("ContentDigest", sa.Unicode(64)),
    sa.UniqueConstraint("SenderAccount", "TxMessageId", name="UQ_TransmitQueue_SenderTx"),
)

transmit_attachment = sa.Table(
    "TransmitAttachment",
    metadata,
    sa.Column("MessageId", sa.Unicode(50), primary_key=True),
    sa.Column("SeqNo", sa.Integer(), primary_key=True),
    sa.Column("FileName", sa.Unicode(250)),
    sa.Column("FileType", sa.Unicode(10)),
    sa.Column("FileSize", sa.BigInteger(), nullable=False),
    sa.Column("DownloadFlag", sa.Integer(), nullable=False),
    sa.Column("Sha256", sa.Unicode(64), nullable=False),
    sa.Column("BlobPath", sa.Unicode(1024), nullable=False),
)

receive_queue = sa.Table(
    "ReceiveQueue",
    metadata,
    sa.Column("EntryId", sa.Unicode(50), primary_key=True),  # the recipient's RxMessageId
    sa.Column("MessageId", sa.Unicode(50), nullable=False),
    sa.Column("Recipient", sa.Unicode(100), nullable=False),
    sa.Column("Kind", sa.Unicode(10), nullable=False),  # message | receipt
    # What of the Bcc list this recipient may see.
    sa.Column("VisibleBcc", engines.max_text()),
    sa.Column("PriorityRank", sa.Integer(), nullable=False),  # 0 = E ... 3 = L
    sa.Column("State", sa.Unicode(10), nullable=False),  # queued|leased|acked|withdrawn
    sa.Column("LeaseUntil", sa.Float()),
    sa.Column("CreatedSeq", sa.BigInteger(), nullable=False),
    # Receipt entries only: the sender's TxMessageId and the final counts.
    sa.Column("TxMessageId", sa.Unicode(50)),
    sa.Column("Served", sa.Integer()),
    sa.Column("Recalled", sa.Integer()),
    sa.Index("IX_ReceiveQueue_Fetch", "Recipient", "State", "PriorityRank", "CreatedSeq"),
    sa.Index("IX_ReceiveQueue_Message", "MessageId", "State"),
)

upload_stage = sa.Table(
    "UploadStage",
    metadata,
    sa.Column("SenderAccount", sa.Unicode(100), primary_key=True),
    sa.Column("TxMessageId", sa.Unicode(50), primary_key=True),
    sa.Column("SeqNo", sa.Integer(), primary_key=True),
    sa.Column("Size", sa.BigInteger(), nullable=False, default=0),
    sa.Column("Path", sa.Unicode(1024), nullable=False),
    sa.Column("Complete", sa.Boolean(), nullable=False, default=False),
    sa.Column("Sha256", sa.Unicode(64)),
)

message_event = sa.Table(
    "MessageEvent",
    metadata,
    # What happened to a message on the server, for its sender's `mpg history`.
    sa.Column("Id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("MessageId", sa.Unicode(50), nullable=False),
    sa.Column("At", sa.Float(), nullable=False),  # Unix time
    sa.Column("Kind", sa.Unicode(30), nullable=False),  # see rows.EventKind
    sa.Column("Account", sa.Unicode(100), nullable=False),  # who did it (or got it)
    sa.Column("Detail", sa.Unicode(200), nullable=False, default=""),
    sa.Index("IX_MessageEvent_Message", "MessageId", "Id"),
)

seen_nonce = sa.Table(
    "SeenNonce",
    metadata,
    # Request nonces every server process has accepted, so that an envelope replayed
    # to another process sharing this database is refused too (mpg.server.replay).
    # SHA-256 hex of account and nonce: fixed width whatever a client sends.
    sa.Column("NonceKey", sa.Unicode(64), primary_key=True),
    sa.Column("ExpiresAt", sa.Float(), nullable=False),  # Unix time; pruned after
    sa.Index("IX_SeenNonce_Expires", "ExpiresAt"),
)

ALL_TABLES: Final = (
    account,
    account_key,
    transmit_queue,
    transmit_attachment,
    receive_queue,
    upload_stage,
    message_event,
    seen_nonce,
)


#: The server's engine: a pool for its threadpool workers, and READ COMMITTED on
#: MariaDB, whose default REPEATABLE READ takes gap locks on the fetch index so that
#: processes leasing one queue deadlock (READ COMMITTED, PostgreSQL's default, locks
#: only the rows it reads, which is what SKIP LOCKED needs). Every other database
#: setting is the core's (:mod:`mpg.db.engine`); every server transaction is a
#: :func:`mpg.db.transactions.begin`, so on SQLite it holds the write lock from its
#: first statement and two fetches can never lease the same entry.
ENGINE_OPTIONS: Final = engines.EngineOptions(
    url_key="server.database_url", pool_size=8, max_overflow=32, read_committed=True
)


def create_engine(url: str) -> sa.Engine:
    """An engine for ``server.database_url``."""
    return engines.create_engine(url, ENGINE_OPTIONS)


def create_tables(engine: sa.Engine) -> list[str]:
    """Create the server's missing tables; return the names created.

    An existing table gets the nullable columns its definition here has and it lacks
    (a column added in a later version); nothing else is altered. A missing column
    that may not be NULL cannot be added to rows already there: SchemaMismatch.
    """
    with transactions.begin(engine, "creating the server tables") as conn:
        inspector = sa.inspect(conn)
        existing = set(inspector.get_table_names())
        metadata.create_all(conn, checkfirst=True)
        for table in ALL_TABLES:
            if table.name in existing:
                _add_missing_columns(conn, table, inspector)
    return [table.name for table in ALL_TABLES if table.name not in existing]


def _add_missing_columns(conn: sa.Connection, table: sa.Table, inspector: sa.Inspector) -> None:
    present = {c["name"] for c in inspector.get_columns(table.name)}
    quoted = conn.dialect.identifier_preparer.format_table(table)
    for column in table.columns:
        if column.name in present:
            continue
        if not column.nullable:
            raise errors.SchemaMismatch(
                f"{table.name}.{column.name} is missing and may not be NULL: "
                "add it to the existing rows by hand, or start from a new database"
            )
        ddl = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE {quoted} ADD {ddl}")


#: The PostgreSQL channel on which a commit that queued entries names their accounts.
QUEUED_CHANNEL: Final = "mpg_server_queued"


def announce(conn: sa.Connection, accounts: collections.abc.Iterable[str]) -> None:
    """Tell every server process (PostgreSQL ``NOTIFY``) that entries await ``accounts``.

    Called inside the transaction that queued them, so a listener is never woken
    before the entries are visible (:func:`mpg.db.notify.send`); elsewhere a no-op:
    the other processes find the entries by polling.
    """
    notify.send(conn, QUEUED_CHANNEL, accounts)
