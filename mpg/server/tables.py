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
import contextlib
import sqlite3
from typing import Any, Final, TypeAlias, TypeVar

import sqlalchemy as sa
import sqlalchemy.event
import sqlalchemy.exc
import structlog

from mpg import errors
from mpg.storage import tables as storage_tables

log = structlog.get_logger(__name__)

#: Milliseconds SQLite waits for another writer before failing.
SQLITE_BUSY_TIMEOUT_MS: Final = 5000
#: Connections kept per engine: one per threadpool worker that touches the database.
POOL_SIZE: Final = 8
POOL_OVERFLOW: Final = 32

#: A result row of any shape (rows are read by column name).
Row: TypeAlias = sa.Row[*tuple[Any, ...]]

_T = TypeVar("_T")

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
    sa.Column("ReceiverList", storage_tables.max_text()),
    sa.Column("BccList", storage_tables.max_text()),
    sa.Column("Subject", sa.Unicode(200)),
    sa.Column("Content", storage_tables.max_text()),
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
    sa.Column("SubmitResult", storage_tables.max_text(), nullable=False),
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
    sa.Column("VisibleBcc", storage_tables.max_text()),
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
    sa.Column("Kind", sa.Unicode(30), nullable=False),  # see queues.EventKind
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


def create_engine(url: str) -> sa.Engine:
    """An engine for ``server.database_url``.

    Every database runs at READ COMMITTED (SQLite is serializable anyway): the
    queue operations lock the rows they change and never depend on a snapshot.

    On SQLite: WAL (readers never wait for the writer), a busy timeout, and
    ``BEGIN IMMEDIATE`` for every transaction so that a read-then-update (leasing
    entries, counting acks) holds the write lock from its first statement and two
    fetches can never lease the same entry.
    """
    try:
        parsed = sa.make_url(url)
        options: dict[str, Any] = {}
        if parsed.get_backend_name() != "sqlite" or parsed.database not in (None, "", ":memory:"):
            options = {"pool_size": POOL_SIZE, "max_overflow": POOL_OVERFLOW}
        if parsed.get_backend_name() in ("mysql", "mariadb"):
            # InnoDB's default REPEATABLE READ takes gap locks on the fetch index, so
            # processes leasing one queue deadlock; READ COMMITTED (PostgreSQL's
            # default) locks only the rows it reads, which is what SKIP LOCKED needs.
            options["isolation_level"] = "READ COMMITTED"
        engine = sa.create_engine(parsed, **options)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise errors.ConfigError(f"server.database_url: {exc}") from exc
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_connect)
        sa.event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: sqlite3.Connection, connection_record: Any) -> None:
    # Autocommit at the driver level: the "begin" hook below issues BEGIN itself.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    # WAL + NORMAL is durable against process crashes; only a power cut may lose the
    # last transactions, which clients then resend (submit is idempotent).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


#: Nullable columns added after their table was first released: ``create_tables``
#: adds them to an existing table that lacks them.
ADDED_COLUMNS: Final = ((transmit_queue, "ContentDigest"),)


def create_tables(engine: sa.Engine) -> list[str]:
    """Create the server's missing tables; return the names created.

    Nothing is altered except :data:`ADDED_COLUMNS` missing from an existing table.
    """
    try:
        with engine.begin() as conn:
            existing = set(sa.inspect(conn).get_table_names())
            metadata.create_all(conn, checkfirst=True)
            for table, name in ADDED_COLUMNS:
                present = {c["name"] for c in sa.inspect(conn).get_columns(table.name)}
                if table.name in existing and name not in present:
                    column = sa.schema.CreateColumn(table.c[name]).compile(dialect=conn.dialect)
                    quoted = conn.dialect.identifier_preparer.format_table(table)
                    conn.exec_driver_sql(f"ALTER TABLE {quoted} ADD {column}")
    except sa.exc.SQLAlchemyError as exc:
        raise errors.StorageError(f"cannot create the server tables: {exc}") from exc
    return [table.name for table in ALL_TABLES if table.name not in existing]


@contextlib.contextmanager
def transaction(engine: sa.Engine) -> collections.abc.Iterator[sa.Connection]:
    """One transaction; driver errors leave as :class:`mpg.errors.StorageError`."""
    try:
        with engine.begin() as conn:
            yield conn
    except sa.exc.SQLAlchemyError as exc:
        raise errors.StorageError(f"server database: {type(exc).__name__}: {exc}") from exc


#: SQLSTATEs (PostgreSQL) and error numbers (MariaDB) of a transaction that lost a race
#: to another one and may simply run again: serialization failure, deadlock, lock wait.
_RETRYABLE_SQLSTATES: Final = frozenset({"40001", "40P01"})
_RETRYABLE_MYSQL_ERRORS: Final = frozenset({1213, 1205})
#: Attempts :func:`retrying` makes before giving up.
ATTEMPTS: Final = 5


def lost_race(exc: BaseException) -> bool:
    """True when ``exc`` (as raised by :func:`transaction`) says another process won a race.

    A unique violation counts: two processes inserting the same key (an idempotent
    submit of one TxMessageId) must not both succeed, and the loser, run again, finds
    the winner's row. Deadlocks and serialization failures are the database asking
    for a retry.
    """
    cause = exc.__cause__ if isinstance(exc, errors.StorageError) else exc
    if isinstance(cause, sa.exc.IntegrityError):
        return True
    if not isinstance(cause, sa.exc.DBAPIError):
        return False
    orig: Any = cause.orig
    if getattr(orig, "sqlstate", None) in _RETRYABLE_SQLSTATES:
        return True
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
    return bool(args) and args[0] in _RETRYABLE_MYSQL_ERRORS


def retrying(operation: collections.abc.Callable[[], _T]) -> _T:
    """Run ``operation`` (one whole transaction) again while it loses a race.

    Several server processes share one database; each operation is written so that
    running it again after a lost race gives the answer it would have given alone.
    """
    attempt = 1
    while True:
        try:
            return operation()
        except errors.StorageError as exc:
            if attempt >= ATTEMPTS or not lost_race(exc):
                raise
            log.info("transaction_retried", attempt=attempt, error=str(exc.__cause__)[:200])
            attempt += 1


#: The PostgreSQL channel on which a commit that queued entries names their accounts.
QUEUED_CHANNEL: Final = "mpg_server_queued"


def announce(conn: sa.Connection, accounts: collections.abc.Iterable[str]) -> None:
    """Tell every server process (PostgreSQL ``NOTIFY``) that entries await ``accounts``.

    Called inside the transaction that queued them: PostgreSQL delivers a
    notification only when that transaction commits, and never if it rolls back, so
    a listener is never woken before the entries are visible. Elsewhere a no-op: the
    other processes find the entries by polling.
    """
    names = sorted(set(accounts))
    if names and conn.dialect.name == "postgresql":
        conn.execute(
            sa.text("SELECT pg_notify(:channel, :account)"),
            [{"channel": QUEUED_CHANNEL, "account": name} for name in names],
        )


def chunks(
    values: collections.abc.Sequence[Any], size: int = 500
) -> collections.abc.Iterator[collections.abc.Sequence[Any]]:
    """Slices of ``values`` small enough for one ``IN (...)`` on every database."""
    for start in range(0, len(values), size):
        yield values[start : start + size]
